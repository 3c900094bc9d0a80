package deploytest

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"go/build"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/gmarcy/container-registry-proxy/config"
	"github.com/gmarcy/container-registry-proxy/shim"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/validation"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	sigsyaml "sigs.k8s.io/yaml"
)

// The chart deploy/helm/container-registry-proxy, rendered by the real helm
// CLI (scripts/install-test-deps.sh installs it in $(go env GOPATH)/bin)
// and checked against the Kubernetes API types, the Containerfile, the
// manifests of deploy/kubernetes and the proxy's own configuration loader.

const (
	helmChart     = "deploy/helm/container-registry-proxy"
	helmRelease   = "crp"
	helmNamespace = "registry-proxy"
	// helmPodIP stands in for status.podIP when the container's
	// environment is rebuilt.
	helmPodIP = "10.1.2.3"
)

// helmScenario is one set of values the chart is rendered with. existing
// names the Secrets the values refer to that the user makes, with their
// keys.
type helmScenario struct {
	name     string
	values   string
	scaled   bool
	existing map[string][]string
	// others are ConfigMaps and ServiceAccounts the values name.
	others map[string]bool
}

var (
	helmSingle = helmScenario{name: "single", values: "{}\n"}

	// Everything optional a single-mode user may set.
	helmSingleOptions = helmScenario{name: "single-options", values: `
image:
  repository: registry.example.com/platform/container-registry-proxy
  tag: v1.2.3
imagePullSecrets: [{name: regcred}]
registries: ""
config:
  registries:
    - host: registry.example.com:5000
      access: {mode: authenticated}
  connect:
    allowPorts: [443, 8443]
cache: {maxSize: 80g, minFree: 5g, inactiveTime: 30d}
persistence:
  cache: {size: 100Gi, storageClass: fast-ssd}
metrics: {enabled: true, port: 9090}
env: {FILL_TIMEOUT: 45m, OUTAGE_HOLD: 20s}
extraEnv:
  - name: SHUTDOWN_GRACE
    value: 40s
defaultAccessMode: authenticated
clientAuth: {htpasswdSecret: crp-users}
auth:
  authRegistries: "docker.io:robot:dckr_pat_example"
  entriesDelimiter: ";;;"
allowPush: true
ca: {existingSecret: crp-ca}
service:
  type: NodePort
  nodePort: 31280
  externalTrafficPolicy: Local
  annotations: {example.com/team: platform}
serviceAccount:
  annotations: {example.com/owner: platform}
nodeSelector: {node-role.kubernetes.io/infra: ""}
tolerations:
  - {key: infra, operator: Exists, effect: NoSchedule}
podAnnotations: {prometheus.io/scrape: "true", prometheus.io/port: "9090"}
podLabels: {team: platform}
priorityClassName: system-cluster-critical
extraVolumes:
  - name: extra-ca
    configMap: {name: corporate-ca}
extraVolumeMounts:
  - name: extra-ca
    mountPath: /etc/crp-extra-ca
    readOnly: true
`, existing: map[string][]string{"crp-users": {"htpasswd"}, "crp-ca": {"ca.crt", "ca.key"}},
		others: map[string]bool{"corporate-ca": true}}

	// Scaled with what the chart makes: the bundled Redis, the CA, the
	// cluster secret and the bucket's credentials.
	helmScaled = helmScenario{name: "scaled", scaled: true, values: `
mode: scaled
storage:
  s3:
    bucket: crp-cache
    region: us-east-1
    regionendpoint: http://minio.storage.svc:9000
    forcepathstyle: true
    rootdirectory: /crp
    credentials:
      accessKeyId: AKIAEXAMPLE
      secretAccessKey: example-secret-access-key
auth:
  authRegistries: "docker.io:robot:dckr_pat_example"
defaultAccessMode: public
`}

	// Scaled with a Redis and every secret the user brings.
	helmScaledExternal = helmScenario{name: "scaled-external", scaled: true, values: `
mode: scaled
replicas: 5
storage:
  redirect: true
  s3:
    bucket: team-cache
    region: eu-west-1
    storageclass: STANDARD_IA
    parameters: {chunksize: 10485760}
    credentials:
      existingSecret: team-s3
      accessKeyIdKey: access-key
      secretAccessKeyKey: secret-key
redis:
  db: 2
  prefix: team-a
  bundled: {enabled: false}
  external:
    address: redis.shared.svc.cluster.local:6379
    existingSecret: shared-redis
    existingSecretKey: redis-password
cluster:
  existingSecret: crp-cluster
  existingSecretKey: secret
ca:
  existingSecret: crp-ca
  certificateKey: tls.crt
  privateKeyKey: tls.key
auth:
  existingSecret: registry-creds
defaultAccessMode: upstream
serviceAccount: {create: false, name: crp}
spread: {whenUnsatisfiable: DoNotSchedule}
podDisruptionBudget: {maxUnavailable: 2}
`, existing: map[string][]string{
		"team-s3":        {"access-key", "secret-key"},
		"shared-redis":   {"redis-password"},
		"crp-cluster":    {"secret"},
		"crp-ca":         {"tls.crt", "tls.key"},
		"registry-creds": {"AUTH_REGISTRIES"},
	}, others: map[string]bool{"crp": true}}

	helmScenarios = []helmScenario{helmSingle, helmSingleOptions, helmScaled, helmScaledExternal}
)

// helmBinary is the helm CLI the tests run: $(go env GOPATH)/bin/helm, as
// scripts/install-test-deps.sh installs it, else helm on PATH. Missing is a
// failure, never a skip.
var helmBinary = sync.OnceValues(func() (string, error) {
	var dirs []string
	if goBin, err := exec.LookPath("go"); err == nil {
		if out, err := exec.Command(goBin, "env", "GOPATH").Output(); err == nil {
			dirs = append(dirs, filepath.SplitList(strings.TrimSpace(string(out)))...)
		}
	}
	dirs = append(dirs, filepath.SplitList(build.Default.GOPATH)...)
	for _, d := range dirs {
		p := filepath.Join(d, "bin", "helm")
		if fi, err := os.Stat(p); err == nil && !fi.IsDir() {
			return p, nil
		}
	}
	if p, err := exec.LookPath("helm"); err == nil {
		return p, nil
	}
	return "", errors.New("helm not found in $(go env GOPATH)/bin or PATH: run scripts/install-test-deps.sh (go install helm.sh/helm/v4/cmd/helm@v4.3.2)")
})

// helmMajor checks once that the CLI is Helm 4, the chart's conventions.
var helmMajor = sync.OnceValue(func() error {
	bin, err := helmBinary()
	if err != nil {
		return err
	}
	out, err := exec.Command(bin, "version", "--template", "{{.Version}}").Output()
	if err != nil {
		return fmt.Errorf("%s version: %w", bin, err)
	}
	if v := strings.TrimSpace(string(out)); !strings.HasPrefix(v, "v4") {
		return fmt.Errorf("%s is helm %s; the chart is tested with helm v4 (go install helm.sh/helm/v4/cmd/helm@v4.3.2)", bin, v)
	}
	return nil
})

// helmRun runs the helm CLI in the repository with its own home
// directories and no cluster.
func helmRun(root string, args ...string) (stdout, stderr string, err error) {
	bin, err := helmBinary()
	if err != nil {
		return "", "", err
	}
	if err := helmMajor(); err != nil {
		return "", "", err
	}
	home, err := os.MkdirTemp("", "crp-helm-")
	if err != nil {
		return "", "", err
	}
	defer os.RemoveAll(home)
	cmd := exec.Command(bin, args...)
	cmd.Dir = root
	cmd.Env = append(os.Environ(),
		"HELM_CACHE_HOME="+filepath.Join(home, "cache"),
		"HELM_CONFIG_HOME="+filepath.Join(home, "config"),
		"HELM_DATA_HOME="+filepath.Join(home, "data"),
		"KUBECONFIG="+filepath.Join(home, "no-kubeconfig"),
	)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err = cmd.Run()
	return o.String(), e.String(), err
}

// helm runs the helm CLI; a missing or wrong CLI fails the test.
func helm(t *testing.T, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	if _, err := helmBinary(); err != nil {
		t.Fatal(err)
	}
	if err := helmMajor(); err != nil {
		t.Fatal(err)
	}
	return helmRun(repoRoot(t), args...)
}

// valuesFile writes a values file for helm -f.
func valuesFile(t *testing.T, values string) string {
	t.Helper()
	f := filepath.Join(t.TempDir(), "values.yaml")
	if err := os.WriteFile(f, []byte(values), 0o600); err != nil {
		t.Fatal(err)
	}
	return f
}

// helmTemplate renders the chart with the given values.
func helmTemplate(t *testing.T, values string) (string, string, error) {
	t.Helper()
	return helm(t, "template", helmRelease, helmChart, "--namespace", helmNamespace, "-f", valuesFile(t, values))
}

// helmObject is one rendered document, decoded strictly into its API type.
type helmObject struct {
	kind, name string
	obj        any
}

// rendered is a scenario's objects by kind.
type rendered struct {
	sc          helmScenario
	objs        []helmObject
	deployments map[string]*appsv1.Deployment
	services    map[string]*corev1.Service
	configMaps  map[string]*corev1.ConfigMap
	secrets     map[string]*corev1.Secret
	pvcs        map[string]*corev1.PersistentVolumeClaim
	pdbs        map[string]*policyv1.PodDisruptionBudget
	sas         map[string]*corev1.ServiceAccount
}

// helmKinds are the kinds the chart may render, each with its API type.
// Any other kind fails the test.
var helmKinds = map[string]func() any{
	"apps/v1 Deployment":            func() any { return &appsv1.Deployment{} },
	"v1 Service":                    func() any { return &corev1.Service{} },
	"v1 ConfigMap":                  func() any { return &corev1.ConfigMap{} },
	"v1 Secret":                     func() any { return &corev1.Secret{} },
	"v1 PersistentVolumeClaim":      func() any { return &corev1.PersistentVolumeClaim{} },
	"v1 ServiceAccount":             func() any { return &corev1.ServiceAccount{} },
	"policy/v1 PodDisruptionBudget": func() any { return &policyv1.PodDisruptionBudget{} },
}

// renderOutputs caches helm template's output per scenario: every test
// decodes it afresh.
var renderOutputs sync.Map // scenario name → func() (string, error)

// render runs helm template for the scenario and decodes every document
// strictly (unknown or duplicate fields are errors) into its API type.
func render(t *testing.T, sc helmScenario) *rendered {
	t.Helper()
	if _, err := helmBinary(); err != nil {
		t.Fatal(err)
	}
	root := repoRoot(t)
	once, _ := renderOutputs.LoadOrStore(sc.name, sync.OnceValues(func() (string, error) {
		dir, err := os.MkdirTemp("", "crp-values-")
		if err != nil {
			return "", err
		}
		defer os.RemoveAll(dir)
		f := filepath.Join(dir, "values.yaml")
		if err := os.WriteFile(f, []byte(sc.values), 0o600); err != nil {
			return "", err
		}
		out, stderr, err := helmRun(root, "template", helmRelease, helmChart, "--namespace", helmNamespace, "-f", f)
		if err != nil {
			return "", fmt.Errorf("helm template (%s): %w\n%s", sc.name, err, stderr)
		}
		return out, nil
	}))
	out, err := once.(func() (string, error))()
	if err != nil {
		t.Fatal(err)
	}
	return decodeRendered(t, sc, out)
}

func decodeRendered(t *testing.T, sc helmScenario, out string) *rendered {
	t.Helper()
	r := &rendered{sc: sc,
		deployments: map[string]*appsv1.Deployment{}, services: map[string]*corev1.Service{},
		configMaps: map[string]*corev1.ConfigMap{}, secrets: map[string]*corev1.Secret{},
		pvcs: map[string]*corev1.PersistentVolumeClaim{}, pdbs: map[string]*policyv1.PodDisruptionBudget{},
		sas: map[string]*corev1.ServiceAccount{}}
	reader := utilyaml.NewYAMLReader(bufio.NewReader(strings.NewReader(out)))
	seen := map[string]bool{}
	for i := 1; ; i++ {
		doc, err := reader.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("%s: document %d: %v", sc.name, i, err)
		}
		var probe map[string]any
		if err := sigsyaml.Unmarshal(doc, &probe); err != nil {
			t.Fatalf("%s: document %d is not YAML: %v\n%s", sc.name, i, err, doc)
		}
		if probe == nil {
			continue // comments only
		}
		var tm metav1.TypeMeta
		if err := sigsyaml.Unmarshal(doc, &tm); err != nil {
			t.Fatalf("%s: document %d: %v", sc.name, i, err)
		}
		gvk := tm.APIVersion + " " + tm.Kind
		mk, ok := helmKinds[gvk]
		if !ok {
			t.Errorf("%s: document %d: kind %q: not one the chart is expected to render (no API type to check it against)", sc.name, i, gvk)
			continue
		}
		obj := mk()
		if err := sigsyaml.UnmarshalStrict(doc, obj); err != nil {
			t.Errorf("%s: document %d (%s): not a valid %s: %v\n%s", sc.name, i, gvk, tm.Kind, err, doc)
			continue
		}
		meta := reflect.ValueOf(obj).Elem().FieldByName("ObjectMeta").Interface().(metav1.ObjectMeta)
		key := tm.Kind + "/" + meta.Name
		if seen[key] {
			t.Errorf("%s: %s rendered twice", sc.name, key)
		}
		seen[key] = true
		r.objs = append(r.objs, helmObject{kind: tm.Kind, name: meta.Name, obj: obj})
		switch o := obj.(type) {
		case *appsv1.Deployment:
			r.deployments[o.Name] = o
		case *corev1.Service:
			r.services[o.Name] = o
		case *corev1.ConfigMap:
			r.configMaps[o.Name] = o
		case *corev1.Secret:
			r.secrets[o.Name] = o
		case *corev1.PersistentVolumeClaim:
			r.pvcs[o.Name] = o
		case *policyv1.PodDisruptionBudget:
			r.pdbs[o.Name] = o
		case *corev1.ServiceAccount:
			r.sas[o.Name] = o
		}
	}
	if len(r.objs) == 0 {
		t.Fatalf("%s: helm template rendered nothing", sc.name)
	}
	return r
}

// proxy returns the proxy's Deployment (component proxy) and container.
func (r *rendered) proxy(t *testing.T) (*appsv1.Deployment, *corev1.Container) {
	t.Helper()
	var found *appsv1.Deployment
	for _, d := range r.deployments {
		if d.Spec.Template.Labels["app.kubernetes.io/component"] == "proxy" {
			if found != nil {
				t.Fatalf("%s: two proxy Deployments, %s and %s", r.sc.name, found.Name, d.Name)
			}
			found = d
		}
	}
	if found == nil {
		t.Fatalf("%s: no Deployment of component proxy", r.sc.name)
	}
	for i := range found.Spec.Template.Spec.Containers {
		if c := &found.Spec.Template.Spec.Containers[i]; c.Name == "proxy" {
			return found, c
		}
	}
	t.Fatalf("%s: Deployment %s has no container proxy", r.sc.name, found.Name)
	return nil, nil
}

// redis returns the bundled Redis's Deployment, nil when there is none.
func (r *rendered) redis() *appsv1.Deployment {
	for _, d := range r.deployments {
		if d.Spec.Template.Labels["app.kubernetes.io/component"] == "redis" {
			return d
		}
	}
	return nil
}

// envFromConfigMap returns the data of the ConfigMap the container reads
// with envFrom.
func (r *rendered) envFromConfigMap(t *testing.T, c *corev1.Container) map[string]string {
	t.Helper()
	data := map[string]string{}
	for _, ef := range c.EnvFrom {
		switch {
		case ef.ConfigMapRef != nil:
			cm, ok := r.configMaps[ef.ConfigMapRef.Name]
			if !ok {
				t.Fatalf("%s: envFrom ConfigMap %s is not rendered", r.sc.name, ef.ConfigMapRef.Name)
			}
			for k, v := range cm.Data {
				data[k] = v
			}
		default:
			t.Errorf("%s: envFrom %+v: only the settings ConfigMap is expected (secrets by name, with secretKeyRef)", r.sc.name, ef)
		}
	}
	return data
}

// envVar returns the container's variable of that name and its index.
func envVar(c *corev1.Container, name string) (*corev1.EnvVar, int) {
	for i := range c.Env {
		if c.Env[i].Name == name {
			return &c.Env[i], i
		}
	}
	return nil, -1
}

// secretValue resolves a secretKeyRef: the rendered Secret's value, or a
// stand-in for a Secret the scenario says the user makes. ok is false for
// a reference to neither.
func (r *rendered) secretValue(ref *corev1.SecretKeySelector, envName string) (string, bool) {
	if s, ok := r.secrets[ref.Name]; ok {
		if v, ok := s.Data[ref.Key]; ok {
			return string(v), true
		}
		if v, ok := s.StringData[ref.Key]; ok {
			return v, true
		}
		return "", false
	}
	for _, k := range r.sc.existing[ref.Name] {
		if k == ref.Key {
			if envName == "AUTH_REGISTRIES" {
				return "docker.io:existing-user:existing-password", true
			}
			return "existing-" + ref.Name + "-" + ref.Key + "-0123456789abcdef", true
		}
	}
	return "", false
}

var envRefRe = regexp.MustCompile(`\$\(([A-Za-z_][A-Za-z0-9_]*)\)`)

// containerEnv rebuilds the environment the proxy process sees: the
// image's ENV, then envFrom, then env in order with $(VAR) expansion,
// the downward API's status.podIP and the Secrets' values.
func (r *rendered) containerEnv(t *testing.T, c *corev1.Container) map[string]string {
	t.Helper()
	env := map[string]string{}
	sts := containerfile(t)
	_, imageDefaults := imageEnv(t, sts[len(sts)-1])
	for k, v := range imageDefaults {
		env[k] = v
	}
	// Kubernetes expands $(VAR) with what envFrom and the earlier env
	// entries define, never with the image's ENV.
	defined := map[string]string{}
	for k, v := range r.envFromConfigMap(t, c) {
		env[k], defined[k] = v, v
	}
	for _, e := range c.Env {
		switch {
		case e.ValueFrom == nil:
			env[e.Name] = envRefRe.ReplaceAllStringFunc(e.Value, func(m string) string {
				if v, ok := defined[envRefRe.FindStringSubmatch(m)[1]]; ok {
					return v
				}
				return m
			})
		case e.ValueFrom.FieldRef != nil:
			if e.ValueFrom.FieldRef.FieldPath != "status.podIP" {
				t.Errorf("%s: env %s: fieldRef %s, want only status.podIP", r.sc.name, e.Name, e.ValueFrom.FieldRef.FieldPath)
			}
			env[e.Name] = helmPodIP
		case e.ValueFrom.SecretKeyRef != nil:
			v, ok := r.secretValue(e.ValueFrom.SecretKeyRef, e.Name)
			if !ok {
				t.Errorf("%s: env %s: Secret %s key %s is neither rendered nor one the values name", r.sc.name, e.Name, e.ValueFrom.SecretKeyRef.Name, e.ValueFrom.SecretKeyRef.Key)
			}
			env[e.Name] = v
		default:
			t.Errorf("%s: env %s: unexpected valueFrom %+v", r.sc.name, e.Name, e.ValueFrom)
		}
		defined[e.Name] = env[e.Name]
	}
	return env
}

// configFile returns the configuration file the container reads
// (CONFIG_FILE) from its ConfigMap volume.
func (r *rendered) configFile(t *testing.T, d *appsv1.Deployment, c *corev1.Container) (inPod, content string) {
	t.Helper()
	ev, _ := envVar(c, "CONFIG_FILE")
	if ev == nil || ev.Value == "" {
		t.Fatalf("%s: no CONFIG_FILE in the container's env", r.sc.name)
	}
	inPod = ev.Value
	for _, m := range c.VolumeMounts {
		if path.Dir(inPod) != path.Clean(m.MountPath) {
			continue
		}
		for _, v := range d.Spec.Template.Spec.Volumes {
			if v.Name != m.Name || v.ConfigMap == nil {
				continue
			}
			cm, ok := r.configMaps[v.ConfigMap.Name]
			if !ok {
				t.Fatalf("%s: volume %s: ConfigMap %s is not rendered", r.sc.name, v.Name, v.ConfigMap.Name)
			}
			data, ok := cm.Data[path.Base(inPod)]
			if !ok {
				t.Fatalf("%s: ConfigMap %s has no key %s (CONFIG_FILE %s)", r.sc.name, cm.Name, path.Base(inPod), inPod)
			}
			return inPod, data
		}
	}
	t.Fatalf("%s: CONFIG_FILE %s is not in a ConfigMap volume of the pod", r.sc.name, inPod)
	return "", ""
}

// loadConfig runs the proxy's own loader on the container's environment,
// with CONFIG_FILE pointing at a copy of the rendered file.
func (r *rendered) loadConfig(t *testing.T) (*config.Config, map[string]string) {
	t.Helper()
	d, c := r.proxy(t)
	env := r.containerEnv(t, c)
	_, content := r.configFile(t, d, c)
	f := filepath.Join(t.TempDir(), "config.yml")
	if err := os.WriteFile(f, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	env["CONFIG_FILE"] = f
	r.materializeSecretFiles(t, d, c, env)
	cfg, err := config.Load(nil, func(k string) string { return env[k] })
	if err != nil {
		t.Fatalf("%s: the container's configuration does not load: %v\n%s", r.sc.name, err, content)
	}
	return cfg, env
}

// materializeSecretFiles writes, for each variable naming a file of a
// Secret volume (HTPASSWD), that file in a temporary directory, and points
// the variable there: config.Load checks such files are readable.
func (r *rendered) materializeSecretFiles(t *testing.T, d *appsv1.Deployment, c *corev1.Container, env map[string]string) {
	t.Helper()
	dir := t.TempDir()
	for name, value := range env {
		for _, m := range c.VolumeMounts {
			prefix := path.Clean(m.MountPath) + "/"
			if !strings.HasPrefix(value, prefix) {
				continue
			}
			for _, v := range d.Spec.Template.Spec.Volumes {
				if v.Name != m.Name || v.Secret == nil {
					continue
				}
				for _, it := range v.Secret.Items {
					if prefix+it.Path != value {
						continue
					}
					content, ok := r.secretValue(&corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: v.Secret.SecretName}, Key: it.Key}, name)
					if !ok {
						t.Errorf("%s=%s: Secret %s key %s is neither rendered nor one the values name", name, value, v.Secret.SecretName, it.Key)
					}
					f := filepath.Join(dir, name)
					if err := os.WriteFile(f, []byte(content), 0o600); err != nil {
						t.Fatal(err)
					}
					env[name] = f
				}
			}
		}
	}
}

func selects(selector, labels map[string]string) bool {
	if len(selector) == 0 {
		return false
	}
	for k, v := range selector {
		if labels[k] != v {
			return false
		}
	}
	return true
}

// containerPortOf resolves a Service's or probe's target port in c.
func containerPortOf(c *corev1.Container, p intstr.IntOrString) int32 {
	if p.Type == intstr.Int {
		return p.IntVal
	}
	for _, cp := range c.Ports {
		if cp.Name == p.StrVal {
			return cp.ContainerPort
		}
	}
	return 0
}

// TestHelmLint: helm lint --strict passes for every scenario.
func TestHelmLint(t *testing.T) {
	t.Parallel()
	for _, sc := range helmScenarios {
		t.Run(sc.name, func(t *testing.T) {
			t.Parallel()
			out, stderr, err := helm(t, "lint", "--strict", helmChart, "--namespace", helmNamespace, "-f", valuesFile(t, sc.values))
			if err != nil || !strings.Contains(out, "0 chart(s) failed") {
				t.Errorf("helm lint --strict: %v\n%s%s", err, out, stderr)
			}
		})
	}
}

// TestHelmNotes: the release notes render (helm install --dry-run=client,
// no cluster) and name the Service's in-cluster address.
func TestHelmNotes(t *testing.T) {
	t.Parallel()
	for _, sc := range helmScenarios {
		t.Run(sc.name, func(t *testing.T) {
			t.Parallel()
			out, stderr, err := helm(t, "install", helmRelease, helmChart, "--dry-run=client", "--namespace", helmNamespace, "-f", valuesFile(t, sc.values))
			if err != nil {
				t.Fatalf("helm install --dry-run=client: %v\n%s", err, stderr)
			}
			_, notes, ok := strings.Cut(out, "\nNOTES:\n")
			if want := "http://" + helmRelease + "-container-registry-proxy." + helmNamespace + ".svc:"; !ok || !strings.Contains(notes, want) {
				t.Errorf("NOTES do not name %s:\n%s", want, notes)
			}
		})
	}
}

// TestHelmObjectsAreValidKubernetes: every rendered document is a known
// kind that decodes strictly into its k8s.io/api type, with valid names
// and labels, the standard labels, references that resolve (Secrets,
// ConfigMaps, volumes, ports) and selectors that pick their pods.
func TestHelmObjectsAreValidKubernetes(t *testing.T) {
	t.Parallel()
	for _, sc := range helmScenarios {
		t.Run(sc.name, func(t *testing.T) {
			t.Parallel()
			r := render(t, sc)
			for _, o := range r.objs {
				checkMeta(t, o)
			}
			for _, d := range r.deployments {
				checkDeployment(t, r, d)
			}
			for _, s := range r.services {
				checkServiceSelects(t, r, s)
			}
			for _, p := range r.pdbs {
				n := 0
				for _, d := range r.deployments {
					if selects(p.Spec.Selector.MatchLabels, d.Spec.Template.Labels) {
						n++
					}
				}
				if len(p.Spec.Selector.MatchExpressions) != 0 || n != 1 {
					t.Errorf("PodDisruptionBudget %s selects the pods of %d Deployments, want 1", p.Name, n)
				}
			}
		})
	}
}

var standardLabels = []string{"app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/version", "app.kubernetes.io/managed-by", "helm.sh/chart"}

func checkMeta(t *testing.T, o helmObject) {
	t.Helper()
	meta := reflect.ValueOf(o.obj).Elem().FieldByName("ObjectMeta").Interface().(metav1.ObjectMeta)
	nameErrs := validation.IsDNS1123Subdomain(meta.Name)
	if o.kind == "Service" {
		nameErrs = validation.IsDNS1035Label(meta.Name)
	}
	for _, e := range nameErrs {
		t.Errorf("%s %q: name: %s", o.kind, meta.Name, e)
	}
	if meta.Namespace != helmNamespace {
		t.Errorf("%s %s: namespace %q, want the release's %q", o.kind, meta.Name, meta.Namespace, helmNamespace)
	}
	checkLabels(t, o.kind+" "+meta.Name, meta.Labels)
	for _, l := range standardLabels {
		if meta.Labels[l] == "" {
			t.Errorf("%s %s: no label %s", o.kind, meta.Name, l)
		}
	}
	if meta.Labels["app.kubernetes.io/managed-by"] != "Helm" || meta.Labels["app.kubernetes.io/instance"] != helmRelease {
		t.Errorf("%s %s: labels %v: want managed-by Helm and instance %s", o.kind, meta.Name, meta.Labels, helmRelease)
	}
	for k := range meta.Annotations {
		for _, e := range validation.IsQualifiedName(k) {
			t.Errorf("%s %s: annotation %q: %s", o.kind, meta.Name, k, e)
		}
	}
}

func checkLabels(t *testing.T, what string, labels map[string]string) {
	t.Helper()
	for k, v := range labels {
		for _, e := range validation.IsQualifiedName(k) {
			t.Errorf("%s: label key %q: %s", what, k, e)
		}
		for _, e := range validation.IsValidLabelValue(v) {
			t.Errorf("%s: label %s=%q: %s", what, k, v, e)
		}
	}
}

// checkDeployment: selector and pod labels, containers, ports, volumes,
// mounts and the ConfigMaps and Secrets the pod refers to.
func checkDeployment(t *testing.T, r *rendered, d *appsv1.Deployment) {
	t.Helper()
	what := "Deployment " + d.Name
	if d.Spec.Selector == nil || len(d.Spec.Selector.MatchLabels) == 0 || !selects(d.Spec.Selector.MatchLabels, d.Spec.Template.Labels) {
		t.Errorf("%s: selector %v does not select its pod template's labels %v", what, d.Spec.Selector, d.Spec.Template.Labels)
	}
	for _, other := range r.deployments {
		if other != d && selects(d.Spec.Selector.MatchLabels, other.Spec.Template.Labels) {
			t.Errorf("%s: selector also selects the pods of %s", what, other.Name)
		}
	}
	checkLabels(t, what+" pod template", d.Spec.Template.Labels)
	pod := d.Spec.Template.Spec
	vols := map[string]corev1.Volume{}
	for _, v := range pod.Volumes {
		if _, dup := vols[v.Name]; dup {
			t.Errorf("%s: volume %s twice", what, v.Name)
		}
		for _, e := range validation.IsDNS1123Label(v.Name) {
			t.Errorf("%s: volume %q: %s", what, v.Name, e)
		}
		vols[v.Name] = v
		switch {
		case v.Secret != nil:
			checkSecretRef(t, r, what+" volume "+v.Name, v.Secret.SecretName, v.Secret.Items)
		case v.ConfigMap != nil:
			if _, ok := r.configMaps[v.ConfigMap.Name]; !ok && !r.sc.others[v.ConfigMap.Name] {
				t.Errorf("%s: volume %s: ConfigMap %s is not rendered", what, v.Name, v.ConfigMap.Name)
			}
		case v.PersistentVolumeClaim != nil:
			if _, ok := r.pvcs[v.PersistentVolumeClaim.ClaimName]; !ok {
				t.Errorf("%s: volume %s: claim %s is not rendered", what, v.Name, v.PersistentVolumeClaim.ClaimName)
			}
		}
	}
	if sa := pod.ServiceAccountName; sa != "" && sa != "default" {
		if _, ok := r.sas[sa]; !ok && !r.sc.others[sa] {
			t.Errorf("%s: serviceAccountName %s is neither rendered nor named in the values", what, sa)
		}
	}
	for _, c := range pod.Containers {
		for _, e := range validation.IsDNS1123Label(c.Name) {
			t.Errorf("%s: container %q: %s", what, c.Name, e)
		}
		if c.Image == "" {
			t.Errorf("%s: container %s has no image", what, c.Name)
		}
		for _, p := range c.Ports {
			for _, e := range validation.IsValidPortName(p.Name) {
				t.Errorf("%s: port %q: %s", what, p.Name, e)
			}
		}
		for _, m := range c.VolumeMounts {
			if _, ok := vols[m.Name]; !ok {
				t.Errorf("%s: container %s mounts %s, which is no volume of the pod", what, c.Name, m.Name)
			}
		}
		for _, e := range c.Env {
			if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil {
				ref := e.ValueFrom.SecretKeyRef
				if _, ok := r.secretValue(ref, e.Name); !ok {
					t.Errorf("%s: env %s: Secret %s key %s is neither rendered nor one the values name", what, e.Name, ref.Name, ref.Key)
				}
			}
		}
		for _, p := range []*corev1.Probe{c.LivenessProbe, c.ReadinessProbe} {
			if p == nil {
				t.Errorf("%s: container %s lacks a liveness or readiness probe", what, c.Name)
				continue
			}
			port := intstr.IntOrString{}
			switch {
			case p.HTTPGet != nil:
				port = p.HTTPGet.Port
			case p.TCPSocket != nil:
				port = p.TCPSocket.Port
			}
			if containerPortOf(&c, port) == 0 {
				t.Errorf("%s: container %s: a probe's port %s is not a port of the container", what, c.Name, port.String())
			}
		}
	}
}

// checkSecretRef: a Secret volume's Secret is rendered with the keys it
// projects, or is one the values name.
func checkSecretRef(t *testing.T, r *rendered, what, name string, items []corev1.KeyToPath) {
	t.Helper()
	if len(items) == 0 {
		t.Errorf("%s: Secret %s projected without items: name the keys", what, name)
	}
	for _, it := range items {
		if _, ok := r.secretValue(&corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: name}, Key: it.Key}, ""); !ok {
			t.Errorf("%s: Secret %s key %s is neither rendered nor one the values name", what, name, it.Key)
		}
	}
}

// checkServiceSelects: a Service selects exactly one Deployment's pods,
// and its ports reach ports of that pod's containers.
func checkServiceSelects(t *testing.T, r *rendered, s *corev1.Service) {
	t.Helper()
	var target *appsv1.Deployment
	for _, d := range r.deployments {
		if selects(s.Spec.Selector, d.Spec.Template.Labels) {
			if target != nil {
				t.Errorf("Service %s selects the pods of %s and %s", s.Name, target.Name, d.Name)
			}
			target = d
		}
	}
	if target == nil {
		t.Errorf("Service %s (selector %v) selects no Deployment's pods", s.Name, s.Spec.Selector)
		return
	}
	for _, p := range s.Spec.Ports {
		found := false
		for i := range target.Spec.Template.Spec.Containers {
			found = found || containerPortOf(&target.Spec.Template.Spec.Containers[i], p.TargetPort) != 0
		}
		if !found {
			t.Errorf("Service %s port %s: targetPort %s is no container port of %s", s.Name, p.Name, p.TargetPort.String(), target.Name)
		}
	}
}

// TestHelmProxyPod: in every scenario the proxy runs the README's image as
// the Containerfile's user, with the Containerfile's port and volumes,
// probed on /healthz and /readyz on that port, and every variable it is
// given is one the binary (or the s3 driver) reads.
func TestHelmProxyPod(t *testing.T) {
	t.Parallel()
	sts := containerfile(t)
	rt := sts[len(sts)-1]
	_, readmeImage := readmeBuild(t)
	expose, _ := strconv.Atoi(strings.TrimSuffix(strings.Fields(rt.find("EXPOSE")[0].args)[0], "/tcp"))
	uid, gid := parseUser(t, rt.find("USER")[0])
	known := binaryEnv(t)
	for _, v := range []string{"POD_IP", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} {
		known[v] = "" // the downward API's address; distribution's s3 driver
	}
	for _, sc := range helmScenarios {
		t.Run(sc.name, func(t *testing.T) {
			t.Parallel()
			r := render(t, sc)
			d, c := r.proxy(t)
			if sc.name == helmSingle.name && imageName(c.Image) != imageName(readmeImage) {
				t.Errorf("image %q: want the image README.md builds (%s)", c.Image, readmeImage)
			}
			if len(c.Ports) == 0 || c.Ports[0].ContainerPort != int32(expose) || c.Ports[0].Name != "proxy" {
				t.Errorf("ports %+v: want the first named proxy on %d (Containerfile EXPOSE)", c.Ports, expose)
			}
			for _, p := range []struct {
				name  string
				probe *corev1.Probe
				path  string
			}{{"livenessProbe", c.LivenessProbe, "/healthz"}, {"readinessProbe", c.ReadinessProbe, "/readyz"}} {
				if p.probe == nil || p.probe.HTTPGet == nil || p.probe.HTTPGet.Path != p.path || containerPortOf(c, p.probe.HTTPGet.Port) != int32(expose) {
					t.Errorf("%s %+v: want GET %s on port %d", p.name, p.probe, p.path, expose)
				}
			}
			mounts := map[string]string{}
			for _, m := range c.VolumeMounts {
				mounts[path.Clean(m.MountPath)] = m.Name
			}
			for v := range containerVolumes(t, rt) {
				if _, ok := mounts[v]; !ok {
					t.Errorf("Containerfile VOLUME %s is not mounted", v)
				}
			}
			if _, ok := mounts["/tmp"]; !ok {
				t.Error("no /tmp volume: the root file system is read-only and pushed bodies are buffered there")
			}
			pod := d.Spec.Template.Spec.SecurityContext
			if pod == nil || pod.RunAsUser == nil || *pod.RunAsUser != int64(uid) || pod.RunAsGroup == nil || *pod.RunAsGroup != int64(gid) ||
				pod.FSGroup == nil || *pod.FSGroup != int64(gid) || pod.RunAsNonRoot == nil || !*pod.RunAsNonRoot {
				t.Errorf("pod securityContext %+v: want runAsNonRoot and user, group and fsGroup %d:%d (Containerfile USER)", pod, uid, gid)
			}
			if sc := c.SecurityContext; sc == nil || !isTrue(sc.ReadOnlyRootFilesystem) || !isFalse(sc.AllowPrivilegeEscalation) ||
				sc.Capabilities == nil || len(sc.Capabilities.Drop) != 1 || sc.Capabilities.Drop[0] != "ALL" {
				t.Errorf("container securityContext %+v: want a read-only root, no privilege escalation, capabilities drop ALL", sc)
			}
			if d.Spec.Template.Spec.AutomountServiceAccountToken == nil || *d.Spec.Template.Spec.AutomountServiceAccountToken {
				t.Error("automountServiceAccountToken is not false: the proxy never talks to the API")
			}
			names := sortedKeys(r.envFromConfigMap(t, c))
			for _, e := range c.Env {
				names = append(names, e.Name)
			}
			for _, n := range names {
				if _, ok := known[n]; !ok {
					t.Errorf("variable %s: the binary does not read it", n)
				}
			}
		})
	}
}

// TestHelmSingleModeMatchesKubernetesManifests: single mode is
// deploy/kubernetes as a chart: one replica, Recreate, the same pod and
// container security contexts, probes, resources and settings, both
// volumes on claims of the same sizes, and no PodDisruptionBudget.
func TestHelmSingleModeMatchesKubernetesManifests(t *testing.T) {
	t.Parallel()
	r := render(t, helmSingle)
	d, c := r.proxy(t)
	kd, kc, kcm, kpvcs := kubernetesTyped(t)

	if d.Spec.Replicas == nil || *d.Spec.Replicas != 1 || d.Spec.Strategy.Type != appsv1.RecreateDeploymentStrategyType {
		t.Errorf("replicas %v, strategy %s: want 1 and Recreate (the cache volume has one writer)", replicasOf(d), d.Spec.Strategy.Type)
	}
	if len(r.pdbs) != 0 || r.redis() != nil {
		t.Error("single mode renders a PodDisruptionBudget or a Redis")
	}
	got, want := d.Spec.Template.Spec, kd.Spec.Template.Spec
	for _, f := range []struct {
		name      string
		got, want any
	}{
		{"pod securityContext", got.SecurityContext, want.SecurityContext},
		{"terminationGracePeriodSeconds", got.TerminationGracePeriodSeconds, want.TerminationGracePeriodSeconds},
		{"enableServiceLinks", got.EnableServiceLinks, want.EnableServiceLinks},
		{"container securityContext", c.SecurityContext, kc.SecurityContext},
		{"livenessProbe", c.LivenessProbe, kc.LivenessProbe},
		{"readinessProbe", c.ReadinessProbe, kc.ReadinessProbe},
		{"resources", c.Resources, kc.Resources},
		{"imagePullPolicy", c.ImagePullPolicy, kc.ImagePullPolicy},
	} {
		if !apiequality.Semantic.DeepEqual(f.got, f.want) {
			g, _ := json.Marshal(f.got)
			w, _ := json.Marshal(f.want)
			t.Errorf("%s differs from deploy/kubernetes:\n chart:    %s\n manifest: %s", f.name, g, w)
		}
	}
	// The volumes: each path deploy/kubernetes mounts from a claim comes
	// from a claim of the chart, of the same size.
	chartClaims := claimsByMount(d, c)
	for mount, claim := range claimsByMount(kd, kc) {
		cc, ok := chartClaims[mount]
		if !ok {
			t.Errorf("%s: deploy/kubernetes mounts claim %s there, the chart no claim", mount, claim)
			continue
		}
		pvc, ok := r.pvcs[cc]
		if !ok {
			t.Errorf("%s: claim %s is not rendered", mount, cc)
			continue
		}
		kp := kpvcs[claim]
		if pvc.Spec.Resources.Requests.Storage().Cmp(*kp.Spec.Resources.Requests.Storage()) != 0 ||
			!reflect.DeepEqual(pvc.Spec.AccessModes, kp.Spec.AccessModes) {
			t.Errorf("%s: claim %s requests %s %v, deploy/kubernetes %s %v", mount, cc,
				pvc.Spec.Resources.Requests.Storage(), pvc.Spec.AccessModes, kp.Spec.Resources.Requests.Storage(), kp.Spec.AccessModes)
		}
	}
	// The CA's claim outlives helm uninstall.
	if cc := chartClaims["/ca"]; r.pvcs[cc] == nil || r.pvcs[cc].Annotations["helm.sh/resource-policy"] != "keep" {
		t.Errorf("the CA's claim %q is not kept on uninstall (helm.sh/resource-policy: keep)", cc)
	}
	// The settings: every variable of deploy/kubernetes/configmap.yaml,
	// with its value.
	env := r.envFromConfigMap(t, c)
	for k, v := range kcm.Data {
		if env[k] != v {
			t.Errorf("setting %s=%q, deploy/kubernetes has %q", k, env[k], v)
		}
	}
	// Room on the cache claim for CACHE_MAX_SIZE + CACHE_MIN_FREE.
	maxSize, err1 := config.ParseSize(env["CACHE_MAX_SIZE"])
	minFree, err2 := config.ParseSize(env["CACHE_MIN_FREE"])
	if err1 != nil || err2 != nil {
		t.Fatalf("CACHE_MAX_SIZE %q, CACHE_MIN_FREE %q: %v %v", env["CACHE_MAX_SIZE"], env["CACHE_MIN_FREE"], err1, err2)
	}
	if pvc := r.pvcs[chartClaims["/registry_proxy_mirror_cache"]]; pvc == nil ||
		pvc.Spec.Resources.Requests.Storage().Cmp(*resource.NewQuantity(maxSize+minFree, resource.BinarySI)) <= 0 {
		t.Errorf("the cache claim is not larger than CACHE_MAX_SIZE + CACHE_MIN_FREE (%d bytes)", maxSize+minFree)
	}
	svc := r.services[d.Name]
	if svc == nil || len(svc.Spec.Ports) != 1 || svc.Spec.Ports[0].Port != 3128 || containerPortOf(c, svc.Spec.Ports[0].TargetPort) != 3128 {
		t.Errorf("Service %s: want port 3128 to the container's 3128", d.Name)
	}
}

// replicasOf is a Deployment's replicas for messages (nil when unset).
func replicasOf(d *appsv1.Deployment) any {
	if d.Spec.Replicas == nil {
		return nil
	}
	return *d.Spec.Replicas
}

// kubernetesTyped decodes deploy/kubernetes strictly into the API types.
func kubernetesTyped(t *testing.T) (*appsv1.Deployment, *corev1.Container, *corev1.ConfigMap, map[string]*corev1.PersistentVolumeClaim) {
	t.Helper()
	dir := filepath.Join(repoRoot(t), "deploy", "kubernetes")
	var d appsv1.Deployment
	var cm corev1.ConfigMap
	pvcs := map[string]*corev1.PersistentVolumeClaim{}
	for file, into := range map[string]any{"deployment.yaml": &d, "configmap.yaml": &cm} {
		data, err := os.ReadFile(filepath.Join(dir, file))
		if err != nil {
			t.Fatal(err)
		}
		if err := sigsyaml.UnmarshalStrict(data, into); err != nil {
			t.Fatalf("deploy/kubernetes/%s: %v", file, err)
		}
	}
	data, err := os.ReadFile(filepath.Join(dir, "pvc.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	reader := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	for {
		doc, err := reader.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		var p corev1.PersistentVolumeClaim
		if err := sigsyaml.UnmarshalStrict(doc, &p); err != nil {
			t.Fatalf("deploy/kubernetes/pvc.yaml: %v", err)
		}
		pvcs[p.Name] = &p
	}
	if len(d.Spec.Template.Spec.Containers) != 1 {
		t.Fatalf("deploy/kubernetes/deployment.yaml: %d containers, want 1", len(d.Spec.Template.Spec.Containers))
	}
	return &d, &d.Spec.Template.Spec.Containers[0], &cm, pvcs
}

// claimsByMount maps the container's mount paths to the claims behind them.
func claimsByMount(d *appsv1.Deployment, c *corev1.Container) map[string]string {
	claims := map[string]string{}
	for _, m := range c.VolumeMounts {
		for _, v := range d.Spec.Template.Spec.Volumes {
			if v.Name == m.Name && v.PersistentVolumeClaim != nil {
				claims[path.Clean(m.MountPath)] = v.PersistentVolumeClaim.ClaimName
			}
		}
	}
	return claims
}

// TestHelmScaledMode: N replicas rolled one at a time and spread over
// nodes, each advertising its pod IP (downward API) to the others, with
// the cluster secret, Redis password and bucket keys only by reference to
// Secrets, the same CA from a Secret, an emptyDir spool, a
// PodDisruptionBudget over the pods and the bundled Redis.
func TestHelmScaledMode(t *testing.T) {
	t.Parallel()
	r := render(t, helmScaled)
	d, c := r.proxy(t)
	checkScaledProxy(t, r, d, c, 3)

	// The bundled Redis: one pod, in memory only, the official image, the
	// password from the same Secret the proxies read.
	rd := r.redis()
	if rd == nil {
		t.Fatal("no bundled Redis Deployment")
	}
	if rd.Spec.Replicas == nil || *rd.Spec.Replicas != 1 {
		t.Errorf("Redis replicas %v, want 1", replicasOf(rd))
	}
	rc := rd.Spec.Template.Spec.Containers[0]
	if imageName(rc.Image) != "redis" || !strings.HasSuffix(rc.Image, ":7") {
		t.Errorf("Redis image %q, want the official redis:7", rc.Image)
	}
	args := strings.Join(append(append([]string{}, rc.Command...), rc.Args...), " ")
	if !strings.Contains(args, "redis-server --save  --appendonly no") {
		t.Errorf("Redis runs %q, want redis-server --save '' --appendonly no", args)
	}
	pw, _ := envVar(c, "REDIS_PASSWORD")
	rpw, _ := envVar(&rc, "REDIS_PASSWORD")
	if pw == nil || rpw == nil || pw.ValueFrom == nil || rpw.ValueFrom == nil || !reflect.DeepEqual(pw.ValueFrom, rpw.ValueFrom) ||
		!strings.Contains(args, "--requirepass $(REDIS_PASSWORD)") {
		t.Errorf("the proxies' REDIS_PASSWORD (%+v) is not the one Redis requires (%+v, %q)", pw, rpw, args)
	}
	// REDIS_ADDR is the Redis Service, which selects the Redis pod.
	addr, _ := envVar(c, "REDIS_ADDR")
	host, port, _ := strings.Cut(addr.Value, ":")
	svc := r.services[host]
	if svc == nil || !selects(svc.Spec.Selector, rd.Spec.Template.Labels) || len(svc.Spec.Ports) != 1 ||
		strconv.Itoa(int(svc.Spec.Ports[0].Port)) != port || containerPortOf(&rc, svc.Spec.Ports[0].TargetPort) != 6379 {
		t.Errorf("REDIS_ADDR %s is not the bundled Redis's Service on its port 6379", addr.Value)
	}
	if len(r.pvcs) != 0 {
		t.Errorf("scaled mode renders claims %v: the cache is in the bucket", sortedKeys(r.pvcs))
	}
	// The chart-made CA and cluster secret are kept (lookup) and the CA
	// outlives uninstall.
	ca := r.secrets[caSecretOf(t, d)]
	if ca == nil || ca.Annotations["helm.sh/resource-policy"] != "keep" {
		t.Error("the chart-made CA Secret is not kept on uninstall (helm.sh/resource-policy: keep)")
	}
	cs, _ := envVar(c, "CLUSTER_SECRET")
	if v, _ := r.secretValue(cs.ValueFrom.SecretKeyRef, ""); len(v) < 16 {
		t.Errorf("generated CLUSTER_SECRET has %d characters, want 16 or more", len(v))
	}
}

// TestHelmScaledExternalRedisAndExistingSecrets: with a Redis and every
// secret brought by the user, the chart renders no Secret and no Redis,
// and points the proxies at what the values name.
func TestHelmScaledExternalRedisAndExistingSecrets(t *testing.T) {
	t.Parallel()
	r := render(t, helmScaledExternal)
	d, c := r.proxy(t)
	checkScaledProxy(t, r, d, c, 5)
	if r.redis() != nil {
		t.Error("a Redis is rendered although redis.bundled.enabled is false")
	}
	if len(r.secrets) != 0 {
		t.Errorf("Secrets %v rendered although the values name existing ones", sortedKeys(r.secrets))
	}
	for name, want := range map[string]string{
		"REDIS_ADDR": "redis.shared.svc.cluster.local:6379", "REDIS_DB": "2", "REDIS_PREFIX": "team-a",
	} {
		if e, _ := envVar(c, name); e == nil || e.Value != want {
			t.Errorf("%s = %+v, want %q", name, e, want)
		}
	}
	for name, ref := range map[string][2]string{
		"REDIS_PASSWORD":        {"shared-redis", "redis-password"},
		"CLUSTER_SECRET":        {"crp-cluster", "secret"},
		"AWS_ACCESS_KEY_ID":     {"team-s3", "access-key"},
		"AWS_SECRET_ACCESS_KEY": {"team-s3", "secret-key"},
		"AUTH_REGISTRIES":       {"registry-creds", "AUTH_REGISTRIES"},
	} {
		e, _ := envVar(c, name)
		if e == nil || e.ValueFrom == nil || e.ValueFrom.SecretKeyRef == nil ||
			e.ValueFrom.SecretKeyRef.Name != ref[0] || e.ValueFrom.SecretKeyRef.Key != ref[1] {
			t.Errorf("%s = %+v, want Secret %s key %s", name, e, ref[0], ref[1])
		}
	}
	for _, v := range d.Spec.Template.Spec.Volumes {
		if v.Name == "ca" {
			want := []corev1.KeyToPath{{Key: "tls.crt", Path: "ca.crt"}, {Key: "tls.key", Path: "ca.key"}}
			if v.Secret == nil || v.Secret.SecretName != "crp-ca" || !reflect.DeepEqual(v.Secret.Items, want) {
				t.Errorf("CA volume %+v: want Secret crp-ca, tls.crt and tls.key as ca.crt and ca.key", v.VolumeSource)
			}
		}
	}
	pdb := r.pdbs[d.Name]
	if pdb == nil || pdb.Spec.MaxUnavailable == nil || pdb.Spec.MaxUnavailable.IntValue() != 2 {
		t.Errorf("PodDisruptionBudget %+v: want maxUnavailable 2 from the values", pdb)
	}
	if d.Spec.Template.Spec.ServiceAccountName != "crp" || len(r.sas) != 0 {
		t.Errorf("serviceAccountName %q with %d ServiceAccounts rendered: want the existing crp", d.Spec.Template.Spec.ServiceAccountName, len(r.sas))
	}
}

// checkScaledProxy holds what every scaled deployment guarantees.
func checkScaledProxy(t *testing.T, r *rendered, d *appsv1.Deployment, c *corev1.Container, replicas int32) {
	t.Helper()
	if d.Spec.Replicas == nil || *d.Spec.Replicas != replicas {
		t.Errorf("replicas %v, want %d", replicasOf(d), replicas)
	}
	if d.Spec.Strategy.Type != appsv1.RollingUpdateDeploymentStrategyType {
		t.Errorf("strategy %s, want RollingUpdate", d.Spec.Strategy.Type)
	}
	// CLUSTER_ADVERTISE from the pod's IP, defined before it.
	podIP, ipAt := envVar(c, "POD_IP")
	adv, advAt := envVar(c, "CLUSTER_ADVERTISE")
	if podIP == nil || podIP.ValueFrom == nil || podIP.ValueFrom.FieldRef == nil || podIP.ValueFrom.FieldRef.FieldPath != "status.podIP" {
		t.Errorf("POD_IP %+v: want the downward API's status.podIP", podIP)
	}
	if adv == nil || adv.Value != "http://$(POD_IP):3128" || ipAt < 0 || ipAt > advAt {
		t.Errorf("CLUSTER_ADVERTISE %+v: want http://$(POD_IP):3128 after POD_IP (Kubernetes expands only earlier variables)", adv)
	}
	// Secrets only by reference, and no secret value anywhere in the
	// Deployment.
	for _, name := range []string{"CLUSTER_SECRET", "REDIS_PASSWORD", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AUTH_REGISTRIES"} {
		e, _ := envVar(c, name)
		if e == nil {
			if name == "CLUSTER_SECRET" || name == "REDIS_PASSWORD" {
				t.Errorf("no %s", name)
			}
			continue
		}
		if e.Value != "" || e.ValueFrom == nil || e.ValueFrom.SecretKeyRef == nil {
			t.Errorf("%s is not read from a Secret (secretKeyRef)", name)
		}
	}
	for _, cm := range r.configMaps {
		for k := range cm.Data {
			if k == "CLUSTER_SECRET" || k == "REDIS_PASSWORD" || strings.HasPrefix(k, "AWS_") || k == "AUTH_REGISTRIES" {
				t.Errorf("ConfigMap %s holds %s", cm.Name, k)
			}
		}
	}
	depYAML, err := sigsyaml.Marshal(d)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range r.secrets {
		for k, v := range s.Data {
			if len(v) >= 8 && bytes.Contains(depYAML, v) {
				t.Errorf("the Deployment holds the value of Secret %s key %s", s.Name, k)
			}
		}
	}
	// The spool: an emptyDir at the cache directory. The CA: a Secret at
	// /ca, read-only, the same for every replica.
	vols := map[string]corev1.Volume{}
	for _, v := range d.Spec.Template.Spec.Volumes {
		vols[v.Name] = v
	}
	for _, m := range c.VolumeMounts {
		v := vols[m.Name]
		switch path.Clean(m.MountPath) {
		case "/registry_proxy_mirror_cache":
			if v.EmptyDir == nil {
				t.Errorf("the cache directory (the spool) is on %+v, want an emptyDir", v.VolumeSource)
			}
		case "/ca":
			if v.Secret == nil || !m.ReadOnly {
				t.Errorf("/ca is on %+v (readOnly %v), want a Secret mounted read-only", v.VolumeSource, m.ReadOnly)
			}
		}
	}
	caSecretOf(t, d)
	// Spread over nodes, selecting these pods.
	spread := false
	for _, tsc := range d.Spec.Template.Spec.TopologySpreadConstraints {
		spread = spread || tsc.TopologyKey == "kubernetes.io/hostname" && tsc.LabelSelector != nil && selects(tsc.LabelSelector.MatchLabels, d.Spec.Template.Labels)
	}
	if a := d.Spec.Template.Spec.Affinity; a != nil && a.PodAntiAffinity != nil {
		for _, term := range a.PodAntiAffinity.RequiredDuringSchedulingIgnoredDuringExecution {
			spread = spread || term.TopologyKey == "kubernetes.io/hostname" && term.LabelSelector != nil && selects(term.LabelSelector.MatchLabels, d.Spec.Template.Labels)
		}
		for _, w := range a.PodAntiAffinity.PreferredDuringSchedulingIgnoredDuringExecution {
			term := w.PodAffinityTerm
			spread = spread || term.TopologyKey == "kubernetes.io/hostname" && term.LabelSelector != nil && selects(term.LabelSelector.MatchLabels, d.Spec.Template.Labels)
		}
	}
	if !spread {
		t.Error("no topology spread constraint or pod anti-affinity over kubernetes.io/hostname selecting the proxy's pods")
	}
	// The PodDisruptionBudget takes them one at a time (by default).
	pdb := r.pdbs[d.Name]
	if pdb == nil || pdb.Spec.Selector == nil || !selects(pdb.Spec.Selector.MatchLabels, d.Spec.Template.Labels) || pdb.Spec.MaxUnavailable == nil {
		t.Errorf("no PodDisruptionBudget with maxUnavailable selecting the proxy's pods")
	} else if r.sc.name == helmScaled.name && pdb.Spec.MaxUnavailable.IntValue() != 1 {
		t.Errorf("PodDisruptionBudget maxUnavailable %s, want 1", pdb.Spec.MaxUnavailable.String())
	}
}

// caSecretOf returns the Secret the pod mounts at /ca, with ca.crt and
// ca.key projected.
func caSecretOf(t *testing.T, d *appsv1.Deployment) string {
	t.Helper()
	c := d.Spec.Template.Spec.Containers[0]
	for _, m := range c.VolumeMounts {
		if path.Clean(m.MountPath) != "/ca" {
			continue
		}
		for _, v := range d.Spec.Template.Spec.Volumes {
			if v.Name == m.Name && v.Secret != nil {
				paths := map[string]bool{}
				for _, it := range v.Secret.Items {
					paths[it.Path] = true
				}
				if !paths["ca.crt"] || !paths["ca.key"] {
					t.Errorf("CA Secret %s projects %v, want ca.crt and ca.key", v.Secret.SecretName, v.Secret.Items)
				}
				return v.Secret.SecretName
			}
		}
	}
	t.Errorf("%s: /ca is not mounted from a Secret", d.Name)
	return ""
}

// TestHelmConfigLoads: the container's environment (the image's ENV, the
// settings ConfigMap, the env with Secrets and the downward API resolved)
// and the configuration file of the ConfigMap load with the proxy's own
// config.Load: single mode on the filesystem driver in the cache volume,
// scaled mode on s3 with Redis, advertising its pod IP.
func TestHelmConfigLoads(t *testing.T) {
	t.Parallel()
	for _, sc := range helmScenarios {
		t.Run(sc.name, func(t *testing.T) {
			t.Parallel()
			r := render(t, sc)
			cfg, env := r.loadConfig(t)

			// The file the chart writes is a valid configuration by itself
			// too (what the values add to it under config may rely on
			// variables, such as HTPASSWD).
			var values map[string]any
			if err := sigsyaml.Unmarshal([]byte(sc.values), &values); err != nil {
				t.Fatal(err)
			}
			if _, userConfig := values["config"]; !userConfig {
				d, c := r.proxy(t)
				_, content := r.configFile(t, d, c)
				f := filepath.Join(t.TempDir(), "config.yml")
				if err := os.WriteFile(f, []byte(content), 0o600); err != nil {
					t.Fatal(err)
				}
				if _, err := config.Load([]string{"--config", f}, nil); err != nil {
					t.Errorf("the ConfigMap's config.yml alone does not load: %v\n%s", err, content)
				}
			}

			if cfg.CacheDir != "/registry_proxy_mirror_cache" || cfg.CADir != "/ca" {
				t.Errorf("cacheDir %s, caDir %s: want the image's volumes", cfg.CacheDir, cfg.CADir)
			}
			driver, params := cfg.StorageDriver()
			if !sc.scaled {
				if driver != "filesystem" || params["rootdirectory"] != "/registry_proxy_mirror_cache" || cfg.Redis.Addr != "" {
					t.Errorf("storage %s %v, redis %q: want the filesystem driver in the cache volume and no Redis", driver, params, cfg.Redis.Addr)
				}
				return
			}
			if driver != "s3" || params["bucket"] == "" || params["region"] == "" {
				t.Errorf("storage %s %v: want s3 with the bucket and region of the values", driver, params)
			}
			if _, ok := params["accesskey"]; ok {
				t.Error("the s3 access key is in the ConfigMap; it belongs in the Secret (AWS_ACCESS_KEY_ID)")
			}
			if cfg.Redis.Addr == "" || cfg.Redis.Addr != env["REDIS_ADDR"] || cfg.Redis.Password == "" || cfg.Redis.Prefix == "" {
				t.Errorf("redis %+v: want the address, password and prefix of the chart", cfg.Redis)
			}
			if want := "http://" + helmPodIP + ":3128"; cfg.Cluster.Advertise != want || len(cfg.Cluster.Secret) < 16 {
				t.Errorf("cluster.advertise %q (want %q), secret of %d characters", cfg.Cluster.Advertise, want, len(cfg.Cluster.Secret))
			}
			if cfg.Cache.MinFree != 0 {
				t.Errorf("cache.minFree %v in scaled mode: the bucket has no disk to keep free", cfg.Cache.MinFree)
			}
			if sc.name == helmScaledExternal.name && (!cfg.StorageRedirect || cfg.Redis.DB != 2 || cfg.Redis.Prefix != "team-a") {
				t.Errorf("storage.redirect %v, redis %+v: want the values' redirect, db 2 and prefix team-a", cfg.StorageRedirect, cfg.Redis)
			}
		})
	}
}

// TestHelmSettingsReachTheProxy: values a platform team sets end up in
// the proxy's configuration.
func TestHelmSettingsReachTheProxy(t *testing.T) {
	t.Parallel()
	r := render(t, helmSingleOptions)
	cfg, env := r.loadConfig(t)
	var hosts []string
	for _, reg := range cfg.Registries {
		hosts = append(hosts, reg.Host)
	}
	// registries: "" keeps the image's REGISTRIES default from being added
	// to config.registries.
	if len(hosts) != 1 || hosts[0] != "registry.example.com:5000" {
		t.Errorf("registries %v, want only config.registries' registry.example.com:5000", hosts)
	}
	if cfg.MetricsListen != ":9090" || !cfg.AllowPush || cfg.DefaultAccessMode != "authenticated" ||
		int64(cfg.Cache.MaxSize) != 80<<30 || len(cfg.AuthRegistries) != 1 || cfg.ClientAuth.Htpasswd == "" {
		t.Errorf("metricsListen %q, allowPush %v, defaultAccessMode %q, cache.maxSize %v, %d AUTH_REGISTRIES entries, htpasswd %q: not the values'",
			cfg.MetricsListen, cfg.AllowPush, cfg.DefaultAccessMode, cfg.Cache.MaxSize, len(cfg.AuthRegistries), cfg.ClientAuth.Htpasswd)
	}
	if env["FILL_TIMEOUT"] != "45m" || env["SHUTDOWN_GRACE"] != "40s" || env["AUTH_REGISTRIES_DELIMITER"] != ";;;" {
		t.Errorf("env FILL_TIMEOUT %q, SHUTDOWN_GRACE %q, AUTH_REGISTRIES_DELIMITER %q: not the values'", env["FILL_TIMEOUT"], env["SHUTDOWN_GRACE"], env["AUTH_REGISTRIES_DELIMITER"])
	}
	d, c := r.proxy(t)
	// HTPASSWD names the file the htpasswd Secret is mounted as.
	htpasswd, _ := envVar(c, "HTPASSWD")
	if htpasswd == nil {
		t.Fatal("no HTPASSWD in the container's env")
	}
	mounted := false
	for _, m := range c.VolumeMounts {
		for _, v := range d.Spec.Template.Spec.Volumes {
			if v.Name == m.Name && v.Secret != nil && v.Secret.SecretName == "crp-users" {
				for _, it := range v.Secret.Items {
					mounted = mounted || path.Join(m.MountPath, it.Path) == htpasswd.Value
				}
			}
		}
	}
	if !mounted {
		t.Errorf("HTPASSWD %s is not the mounted Secret crp-users", htpasswd.Value)
	}
	svc := r.services[d.Name]
	var metrics *corev1.ServicePort
	for i := range svc.Spec.Ports {
		if svc.Spec.Ports[i].Name == "metrics" {
			metrics = &svc.Spec.Ports[i]
		}
	}
	if metrics == nil || containerPortOf(c, metrics.TargetPort) != 9090 || svc.Spec.Type != corev1.ServiceTypeNodePort || svc.Spec.Ports[0].NodePort != 31280 {
		t.Errorf("Service %+v: want NodePort 31280 and the metrics port 9090", svc.Spec)
	}
	if d.Spec.Template.Spec.NodeSelector["node-role.kubernetes.io/infra"] != "" || len(d.Spec.Template.Spec.Tolerations) != 1 ||
		d.Spec.Template.Labels["team"] != "platform" || c.Image != "registry.example.com/platform/container-registry-proxy:v1.2.3" {
		t.Errorf("nodeSelector, tolerations, pod labels or image are not the values'")
	}
	if pvc := r.pvcs[claimsByMount(d, c)["/ca"]]; pvc != nil {
		t.Errorf("the CA comes from the Secret crp-ca, yet claim %s is rendered", pvc.Name)
	}
}

// TestHelmGeneratedCALoads: the CA the chart generates (genCA) is one the
// proxy accepts as its CA directory, and the cluster secret and Redis
// password are long enough.
func TestHelmGeneratedCALoads(t *testing.T) {
	t.Parallel()
	r := render(t, helmScaled)
	d, _ := r.proxy(t)
	s := r.secrets[caSecretOf(t, d)]
	if s == nil {
		t.Fatal("the CA Secret is not rendered")
	}
	dir := t.TempDir()
	for _, k := range []string{"ca.crt", "ca.key"} {
		if len(s.Data[k]) == 0 {
			t.Fatalf("CA Secret %s: no %s", s.Name, k)
		}
		if err := os.WriteFile(filepath.Join(dir, k), s.Data[k], 0o600); err != nil {
			t.Fatal(err)
		}
	}
	ca, err := shim.LoadOrCreateCA(dir)
	if err != nil {
		t.Fatalf("the proxy refuses the chart's CA: %v", err)
	}
	if !ca.Certificate().IsCA || !strings.Contains(ca.Certificate().Subject.CommonName, helmRelease) {
		t.Errorf("CA %q: want a CA naming the release", ca.Certificate().Subject.CommonName)
	}
}

// TestHelmSchemaRejectsBadValues: values.schema.json and the chart's own
// checks refuse values that would deploy something broken, and helm
// template says which value.
func TestHelmSchemaRejectsBadValues(t *testing.T) {
	t.Parallel()
	const scaled = "mode: scaled\nstorage: {s3: {bucket: crp-cache, region: us-east-1}}\n"
	for _, tc := range []struct{ name, values, want string }{
		{"replicas not a number", scaled + "replicas: three\n", "replicas"},
		{"replicas zero", scaled + "replicas: 0\n", "replicas"},
		{"unknown mode", "mode: cluster\n", "mode"},
		{"unknown top-level key", "replica: 3\n", "replica"},
		{"scaled without bucket", "mode: scaled\nstorage: {s3: {region: us-east-1}}\n", "bucket"},
		{"scaled without region", "mode: scaled\nstorage: {s3: {bucket: crp-cache}}\n", "region"},
		{"external redis without address", scaled + "redis: {bundled: {enabled: false}}\n", "address"},
		{"redis address without port", scaled + "redis: {bundled: {enabled: false}, external: {address: redis}}\n", "address"},
		{"size in the wrong unit", "cache: {maxSize: 40GB}\n", "maxSize"},
		{"service type", "service: {type: Ingress}\n", "type"},
		{"short cluster secret", scaled + "cluster: {secret: short}\n", "secret"},
		{"metrics on the proxy port", "metrics: {enabled: true, port: 3128}\n", "port"},
		{"a secret in env", "env: {CLUSTER_SECRET: abcdefghijklmnopqrstuvwxyz}\n", "CLUSTER_SECRET"},
		{"a chart-managed variable in env", "env: {REGISTRIES: quay.io}\n", "REGISTRIES"},
		{"two sources of credentials", "auth: {existingSecret: creds, authRegistries: 'docker.io:u:p'}\n", "auth"},
		{"s3 keys in the file", scaled + "storage: {s3: {bucket: crp-cache, region: us-east-1, parameters: {secretkey: x}}}\n", "secretkey"},
		{"storage in config in scaled mode", scaled + "config: {storage: {inmemory: {}}}\n", "config.storage"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			out, stderr, err := helmTemplate(t, tc.values)
			if err == nil {
				t.Fatalf("helm template accepted %q:\n%s", tc.values, out)
			}
			if !strings.Contains(stderr, tc.want) {
				t.Errorf("helm template refused %q without naming %q:\n%s", tc.values, tc.want, stderr)
			}
		})
	}
}

// fileExt are the last parts of file names (ca.crt), not of values paths.
var fileExt = map[string]bool{"crt": true, "key": true, "yaml": true, "yml": true, "md": true, "json": true}

var valuesPathRe = regexp.MustCompile("`([a-zA-Z][a-zA-Z0-9]*(?:\\.[a-zA-Z][a-zA-Z0-9]*)+)(?:[:=][^`]*)?`")

// TestHelmDocs: docs/scaling.md has a "Deploying with Helm" section, and
// every values path it names (`storage.s3.bucket`) exists in the chart's
// values.yaml; the README links the chart.
func TestHelmDocs(t *testing.T) {
	t.Parallel()
	doc := readRepoFile(t, "docs/scaling.md")
	if !strings.HasPrefix(doc, "# Scaling out\n") {
		t.Error("docs/scaling.md does not start with # Scaling out")
	}
	section := strings.Index(doc, "\n## Deploying with Helm\n")
	if section < 0 {
		t.Fatal(`docs/scaling.md: no "## Deploying with Helm" section`)
	}
	end := len(doc)
	if next := strings.Index(doc[section+1:], "\n## "); next >= 0 {
		end = section + 1 + next
	}
	text := fenceRe.ReplaceAllString(doc[section:end], "")
	var values map[string]any
	if err := sigsyaml.Unmarshal([]byte(readRepoFile(t, helmChart+"/values.yaml")), &values); err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, m := range valuesPathRe.FindAllStringSubmatch(text, -1) {
		parts := strings.Split(m[1], ".")
		if _, top := values[parts[0]]; !top || fileExt[parts[len(parts)-1]] {
			continue // a configuration key or a file name, not a value
		}
		n++
		var cur any = values
		for _, p := range parts {
			mp, ok := cur.(map[string]any)
			if !ok {
				t.Errorf("docs/scaling.md names %s: %s is not a map in values.yaml", m[1], p)
				break
			}
			if len(mp) == 0 {
				break // a free-form map (config, env, annotations)
			}
			if cur, ok = mp[p]; !ok {
				t.Errorf("docs/scaling.md names %s, which values.yaml does not have", m[1])
				break
			}
		}
	}
	if n < 10 {
		t.Errorf("docs/scaling.md names %d values of the chart; the section should show the ones that matter", n)
	}
	if !strings.Contains(readRepoFile(t, "README.md"), "("+helmChart+")") {
		t.Errorf("README.md does not link %s", helmChart)
	}
}
