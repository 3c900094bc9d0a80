package deploytest

import (
	"errors"
	"fmt"
	"io"
	"math/big"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/gmarcy/container-registry-proxy/config"
	"gopkg.in/yaml.v3"
)

// The subset of the Kubernetes API the manifests are checked against.
type (
	k8sObject struct {
		File       string    `yaml:"-"`
		APIVersion string    `yaml:"apiVersion"`
		Kind       string    `yaml:"kind"`
		Metadata   k8sMeta   `yaml:"metadata"`
		Spec       yaml.Node `yaml:"spec"`
		Data       map[string]string
		StringData map[string]string `yaml:"stringData"`
		// Kustomization
		Resources []string `yaml:"resources"`
		Images    []struct {
			Name    string `yaml:"name"`
			NewName string `yaml:"newName"`
		} `yaml:"images"`
	}
	k8sMeta struct {
		Name   string            `yaml:"name"`
		Labels map[string]string `yaml:"labels"`
	}
	deploymentSpec struct {
		Replicas *int `yaml:"replicas"`
		Strategy struct {
			Type string `yaml:"type"`
		} `yaml:"strategy"`
		Selector struct {
			MatchLabels map[string]string `yaml:"matchLabels"`
		} `yaml:"selector"`
		Template struct {
			Metadata k8sMeta `yaml:"metadata"`
			Spec     podSpec `yaml:"spec"`
		} `yaml:"template"`
	}
	podSpec struct {
		SecurityContext securityContext `yaml:"securityContext"`
		Containers      []container     `yaml:"containers"`
		Volumes         []struct {
			Name                  string `yaml:"name"`
			PersistentVolumeClaim *struct {
				ClaimName string `yaml:"claimName"`
			} `yaml:"persistentVolumeClaim"`
		} `yaml:"volumes"`
	}
	securityContext struct {
		RunAsNonRoot             *bool `yaml:"runAsNonRoot"`
		RunAsUser                *int  `yaml:"runAsUser"`
		RunAsGroup               *int  `yaml:"runAsGroup"`
		FSGroup                  *int  `yaml:"fsGroup"`
		AllowPrivilegeEscalation *bool `yaml:"allowPrivilegeEscalation"`
		ReadOnlyRootFilesystem   *bool `yaml:"readOnlyRootFilesystem"`
		Capabilities             *struct {
			Drop []string `yaml:"drop"`
		} `yaml:"capabilities"`
	}
	container struct {
		Name  string `yaml:"name"`
		Image string `yaml:"image"`
		Ports []struct {
			Name          string `yaml:"name"`
			ContainerPort int    `yaml:"containerPort"`
		} `yaml:"ports"`
		Env []struct {
			Name string `yaml:"name"`
		} `yaml:"env"`
		EnvFrom []struct {
			ConfigMapRef *struct {
				Name     string `yaml:"name"`
				Optional bool   `yaml:"optional"`
			} `yaml:"configMapRef"`
			SecretRef *struct {
				Name     string `yaml:"name"`
				Optional bool   `yaml:"optional"`
			} `yaml:"secretRef"`
		} `yaml:"envFrom"`
		VolumeMounts []struct {
			Name      string `yaml:"name"`
			MountPath string `yaml:"mountPath"`
		} `yaml:"volumeMounts"`
		LivenessProbe  *probe `yaml:"livenessProbe"`
		ReadinessProbe *probe `yaml:"readinessProbe"`
		StartupProbe   *probe `yaml:"startupProbe"`
		Resources      struct {
			Requests map[string]string `yaml:"requests"`
			Limits   map[string]string `yaml:"limits"`
		} `yaml:"resources"`
		SecurityContext securityContext `yaml:"securityContext"`
	}
	probe struct {
		HTTPGet *struct {
			Path string      `yaml:"path"`
			Port intOrString `yaml:"port"`
		} `yaml:"httpGet"`
	}
	serviceSpec struct {
		Selector map[string]string `yaml:"selector"`
		Ports    []struct {
			Port       int         `yaml:"port"`
			TargetPort intOrString `yaml:"targetPort"`
		} `yaml:"ports"`
	}
	pvcSpec struct {
		Resources struct {
			Requests map[string]string `yaml:"requests"`
		} `yaml:"resources"`
	}
)

// intOrString is a port given by number or by name.
type intOrString struct {
	Int    int
	String string
}

func (p *intOrString) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return errors.New("want a port number or name")
	}
	if i, err := strconv.Atoi(n.Value); err == nil && n.Tag == "!!int" {
		p.Int = i
		return nil
	}
	p.String = n.Value
	return nil
}

// resolve returns the port number, looking a name up in c's ports.
func (p intOrString) resolve(c container) int {
	if p.String == "" {
		return p.Int
	}
	for _, cp := range c.Ports {
		if cp.Name == p.String {
			return cp.ContainerPort
		}
	}
	return 0
}

// manifests decodes every document of deploy/kubernetes/*.yaml.
func manifests(t *testing.T) []k8sObject {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(repoRoot(t), "deploy", "kubernetes", "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no deploy/kubernetes/*.yaml (%v)", err)
	}
	var out []k8sObject
	for _, f := range files {
		fh, err := os.Open(f)
		if err != nil {
			t.Fatal(err)
		}
		dec := yaml.NewDecoder(fh)
		for i := 1; ; i++ {
			var o k8sObject
			err := dec.Decode(&o)
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatalf("%s document %d: %v", filepath.Base(f), i, err)
			}
			if o.Kind == "" || o.APIVersion == "" {
				t.Fatalf("%s document %d: no kind or apiVersion", filepath.Base(f), i)
			}
			if o.Kind != "Kustomization" && o.Metadata.Name == "" {
				t.Fatalf("%s document %d: %s without metadata.name", filepath.Base(f), i, o.Kind)
			}
			o.File = filepath.Base(f)
			out = append(out, o)
		}
		fh.Close()
	}
	return out
}

// byKind returns the objects of one kind.
func byKind(objs []k8sObject, kind string) []k8sObject {
	var out []k8sObject
	for _, o := range objs {
		if o.Kind == kind {
			out = append(out, o)
		}
	}
	return out
}

func decodeSpec(t *testing.T, o k8sObject, v any) {
	t.Helper()
	if err := o.Spec.Decode(v); err != nil {
		t.Fatalf("%s %s/%s: spec: %v", o.File, o.Kind, o.Metadata.Name, err)
	}
}

// proxyDeployment returns the one Deployment and its proxy container.
func proxyDeployment(t *testing.T, objs []k8sObject) (k8sObject, deploymentSpec, container) {
	t.Helper()
	deps := byKind(objs, "Deployment")
	if len(deps) != 1 {
		t.Fatalf("deploy/kubernetes has %d Deployments, want 1", len(deps))
	}
	var spec deploymentSpec
	decodeSpec(t, deps[0], &spec)
	if len(spec.Template.Spec.Containers) != 1 {
		t.Fatalf("Deployment %s has %d containers, want 1", deps[0].Metadata.Name, len(spec.Template.Spec.Containers))
	}
	return deps[0], spec, spec.Template.Spec.Containers[0]
}

// imageName is a reference without registry path, tag or digest.
func imageName(ref string) string {
	ref, _, _ = strings.Cut(ref, "@")
	if i := strings.LastIndex(ref, ":"); i > strings.LastIndex(ref, "/") {
		ref = ref[:i]
	}
	return path.Base(ref)
}

// TestKubernetesManifestsMatchContainerfile: the Deployment runs the image
// the README builds, as the Containerfile's user, with its port and both
// of its volumes on persistent claims, probed on /healthz and /readyz.
func TestKubernetesManifestsMatchContainerfile(t *testing.T) {
	t.Parallel()
	objs := manifests(t)
	dep, spec, c := proxyDeployment(t, objs)
	sts := containerfile(t)
	rt := sts[len(sts)-1]
	_, readmeImage := readmeBuild(t)

	if got := imageName(c.Image); got != imageName(readmeImage) {
		t.Errorf("container image %q: want the image README.md builds (%s)", c.Image, readmeImage)
	}
	for _, k := range byKind(objs, "Kustomization") {
		for _, img := range k.Images {
			if img.Name != strings.Split(c.Image, ":")[0] {
				t.Errorf("%s: images[].name %q does not name the Deployment's image %q", k.File, img.Name, c.Image)
			}
		}
	}

	// Port: the one EXPOSE of the Containerfile.
	expose := strings.TrimSuffix(strings.Fields(rt.find("EXPOSE")[0].args)[0], "/tcp")
	port, _ := strconv.Atoi(expose)
	if len(c.Ports) != 1 || c.Ports[0].ContainerPort != port {
		t.Errorf("container ports %+v: want one containerPort %d (Containerfile EXPOSE)", c.Ports, port)
	}

	// Volumes: every VOLUME is mounted from a PersistentVolumeClaim defined
	// here.
	claims := map[string]bool{}
	for _, p := range byKind(objs, "PersistentVolumeClaim") {
		claims[p.Metadata.Name] = true
	}
	podVols := map[string]string{}
	for _, v := range spec.Template.Spec.Volumes {
		podVols[v.Name] = ""
		if v.PersistentVolumeClaim != nil {
			podVols[v.Name] = v.PersistentVolumeClaim.ClaimName
		}
	}
	mounts := map[string]string{}
	for _, m := range c.VolumeMounts {
		if _, ok := podVols[m.Name]; !ok {
			t.Errorf("volumeMount %s: no pod volume of that name", m.Name)
		}
		mounts[path.Clean(m.MountPath)] = m.Name
	}
	for v := range containerVolumes(t, rt) {
		name, ok := mounts[v]
		if !ok {
			t.Errorf("Containerfile VOLUME %s is not mounted", v)
			continue
		}
		if claim := podVols[name]; !claims[claim] {
			t.Errorf("%s is mounted from volume %s, not from a PersistentVolumeClaim of deploy/kubernetes (claim %q): it must survive restarts", v, name, claim)
		}
	}

	// Probes.
	for _, p := range []struct {
		name  string
		probe *probe
		path  string
	}{{"livenessProbe", c.LivenessProbe, "/healthz"}, {"readinessProbe", c.ReadinessProbe, "/readyz"}} {
		if p.probe == nil || p.probe.HTTPGet == nil {
			t.Errorf("%s: want an httpGet probe on %s", p.name, p.path)
			continue
		}
		if p.probe.HTTPGet.Path != p.path || p.probe.HTTPGet.Port.resolve(c) != port {
			t.Errorf("%s: GET %s on port %+v, want %s on %d", p.name, p.probe.HTTPGet.Path, p.probe.HTTPGet.Port, p.path, port)
		}
	}

	// Security: non-root as the image's user, volumes writable by it.
	uid, gid := parseUser(t, rt.find("USER")[0])
	pod := spec.Template.Spec.SecurityContext
	if !isTrue(pod.RunAsNonRoot) && !isTrue(c.SecurityContext.RunAsNonRoot) {
		t.Error("securityContext.runAsNonRoot is not true")
	}
	for name, got := range map[string]*int{"runAsUser": pod.RunAsUser, "runAsGroup": pod.RunAsGroup, "fsGroup": pod.FSGroup} {
		want := uid
		if name != "runAsUser" {
			want = gid
		}
		if got == nil || *got != want {
			t.Errorf("pod securityContext.%s = %v, want %d (Containerfile USER %d:%d)", name, deref(got), want, uid, gid)
		}
	}
	sc := c.SecurityContext
	if !isFalse(sc.AllowPrivilegeEscalation) || !isTrue(sc.ReadOnlyRootFilesystem) || sc.Capabilities == nil || !contains(sc.Capabilities.Drop, "ALL") {
		t.Errorf("container securityContext %+v: want allowPrivilegeEscalation false, readOnlyRootFilesystem true, capabilities.drop [ALL]", sc)
	}
	if isTrue(sc.ReadOnlyRootFilesystem) {
		if _, ok := mounts["/tmp"]; !ok {
			t.Error("readOnlyRootFilesystem without a /tmp volume: pushed bodies are buffered in the temporary directory")
		}
	}

	// Resources.
	for _, r := range []string{"cpu", "memory"} {
		if c.Resources.Requests[r] == "" {
			t.Errorf("resources.requests.%s is not set", r)
		}
	}
	if c.Resources.Limits["memory"] == "" {
		t.Error("resources.limits.memory is not set")
	}

	// One writer per cache directory.
	if spec.Replicas == nil || *spec.Replicas != 1 || spec.Strategy.Type != "Recreate" {
		t.Errorf("Deployment %s: want replicas 1 and strategy Recreate (the cache volume has one writer)", dep.Metadata.Name)
	}
	for k, v := range spec.Selector.MatchLabels {
		if spec.Template.Metadata.Labels[k] != v {
			t.Errorf("selector %s=%s does not match the pod template's labels", k, v)
		}
	}
}

func isTrue(b *bool) bool  { return b != nil && *b }
func isFalse(b *bool) bool { return b != nil && !*b }
func deref(p *int) any {
	if p == nil {
		return nil
	}
	return *p
}

// TestKubernetesService: the Service selects the proxy's pods and sends
// its port to the container's.
func TestKubernetesService(t *testing.T) {
	t.Parallel()
	objs := manifests(t)
	_, spec, c := proxyDeployment(t, objs)
	svcs := byKind(objs, "Service")
	if len(svcs) != 1 {
		t.Fatalf("deploy/kubernetes has %d Services, want 1", len(svcs))
	}
	var ss serviceSpec
	decodeSpec(t, svcs[0], &ss)
	if len(ss.Selector) == 0 {
		t.Fatal("Service has no selector")
	}
	for k, v := range ss.Selector {
		if spec.Template.Metadata.Labels[k] != v {
			t.Errorf("Service selector %s=%s does not select the Deployment's pods", k, v)
		}
	}
	if len(ss.Ports) != 1 || ss.Ports[0].Port != 3128 || ss.Ports[0].TargetPort.resolve(c) != 3128 {
		t.Errorf("Service ports %+v: want port 3128 to the container's 3128", ss.Ports)
	}
}

// TestKubernetesSettings: the environment given to the container names
// variables the binary reads, the ConfigMaps it references exist, and the
// cache volume holds CACHE_MAX_SIZE plus CACHE_MIN_FREE.
func TestKubernetesSettings(t *testing.T) {
	t.Parallel()
	objs := manifests(t)
	_, spec, c := proxyDeployment(t, objs)
	known := binaryEnv(t)
	cms := map[string]map[string]string{}
	for _, cm := range byKind(objs, "ConfigMap") {
		cms[cm.Metadata.Name] = cm.Data
	}
	env := map[string]string{}
	sts := containerfile(t)
	_, imageDefaults := imageEnv(t, sts[len(sts)-1])
	for k, v := range imageDefaults {
		env[k] = v
	}
	for _, ef := range c.EnvFrom {
		switch {
		case ef.ConfigMapRef != nil:
			data, ok := cms[ef.ConfigMapRef.Name]
			if !ok && !ef.ConfigMapRef.Optional {
				t.Errorf("envFrom configMapRef %s: no such ConfigMap in deploy/kubernetes", ef.ConfigMapRef.Name)
			}
			for k, v := range data {
				env[k] = v
			}
		case ef.SecretRef != nil:
			if !ef.SecretRef.Optional && len(byKind(objs, "Secret")) == 0 {
				t.Errorf("envFrom secretRef %s is required but deploy/kubernetes defines no Secret", ef.SecretRef.Name)
			}
		}
	}
	for _, e := range c.Env {
		env[e.Name] = "?"
	}
	for _, cm := range byKind(objs, "ConfigMap") {
		for k := range cm.Data {
			if _, ok := known[k]; !ok {
				t.Errorf("%s: ConfigMap %s sets %s, which the binary does not read", cm.File, cm.Metadata.Name, k)
			}
		}
	}
	for _, e := range c.Env {
		if _, ok := known[e.Name]; !ok {
			t.Errorf("container env %s: the binary does not read it", e.Name)
		}
	}
	if _, err := config.Load(nil, func(k string) string { return env[k] }); err != nil {
		t.Errorf("the container's environment does not load: %v", err)
	}

	// Cache volume size.
	maxSize, err := config.ParseSize(env["CACHE_MAX_SIZE"])
	if err != nil {
		t.Fatalf("CACHE_MAX_SIZE %q: %v", env["CACHE_MAX_SIZE"], err)
	}
	minFree, err := config.ParseSize(env["CACHE_MIN_FREE"])
	if err != nil {
		t.Fatalf("CACHE_MIN_FREE %q: %v", env["CACHE_MIN_FREE"], err)
	}
	cacheVol := ""
	for _, m := range c.VolumeMounts {
		if path.Clean(m.MountPath) == path.Clean(env["CACHE_DIRECTORY"]) {
			cacheVol = m.Name
		}
	}
	claim := ""
	for _, v := range spec.Template.Spec.Volumes {
		if v.Name == cacheVol && v.PersistentVolumeClaim != nil {
			claim = v.PersistentVolumeClaim.ClaimName
		}
	}
	for _, p := range byKind(objs, "PersistentVolumeClaim") {
		if p.Metadata.Name != claim {
			continue
		}
		var ps pvcSpec
		decodeSpec(t, p, &ps)
		size, err := parseQuantity(ps.Resources.Requests["storage"])
		if err != nil {
			t.Fatalf("PVC %s: storage %q: %v", claim, ps.Resources.Requests["storage"], err)
		}
		if need := big.NewInt(maxSize + minFree); size.Cmp(need) <= 0 {
			t.Errorf("PVC %s requests %s, not more than CACHE_MAX_SIZE + CACHE_MIN_FREE (%d bytes)", claim, ps.Resources.Requests["storage"], need)
		}
		return
	}
	t.Errorf("no PersistentVolumeClaim found for the cache directory %s", env["CACHE_DIRECTORY"])
}

// parseQuantity reads a Kubernetes quantity with a binary or decimal
// suffix ("50Gi", "16Mi", "100G", "1000").
func parseQuantity(s string) (*big.Int, error) {
	m := regexp.MustCompile(`^(\d+)(Ki|Mi|Gi|Ti|Pi|k|M|G|T|P)?$`).FindStringSubmatch(s)
	if m == nil {
		return nil, fmt.Errorf("not an integer quantity")
	}
	n, _ := new(big.Int).SetString(m[1], 10)
	mult := map[string]int64{"": 1, "Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30, "Ti": 1 << 40, "Pi": 1 << 50,
		"k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15}[m[2]]
	return n.Mul(n, big.NewInt(mult)), nil
}

// TestKustomizationListsEveryManifest: kubectl apply -k applies every
// other file of the directory.
func TestKustomizationListsEveryManifest(t *testing.T) {
	t.Parallel()
	objs := manifests(t)
	ks := byKind(objs, "Kustomization")
	if len(ks) == 0 {
		t.Skip("no kustomization.yaml")
	}
	listed := map[string]bool{}
	for _, r := range ks[0].Resources {
		listed[r] = true
	}
	files := map[string]bool{}
	for _, o := range objs {
		if o.Kind != "Kustomization" {
			files[o.File] = true
		}
	}
	got, want := sortedKeys(listed), sortedKeys(files)
	sort.Strings(got)
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("%s resources %v, want the directory's manifests %v", ks[0].File, got, want)
	}
}
