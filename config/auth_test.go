package config

import (
	"reflect"
	"strings"
	"testing"
	"time"
)

// gcrKey is a GCR-style _json_key password: multi-line JSON with spaces,
// colons (single, double and triple), quotes and backslashes.
const gcrKey = `{
  "type": "service_account",
  "project_id": "my-project",
  "private_key_id": "0123456789abcdef",
  "private_key": "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n-----END PRIVATE KEY-----\n",
  "client_email": "proxy@my-project.iam.gserviceaccount.com",
  "auth_uri": "https://accounts.google.com/o/oauth2/auth",
  "note": "colons : :: ::: and \"quotes\" and  two  spaces"
}
`

func TestParseAuthRegistries(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name              string
		value, entry, fld string
		want              []AuthEntry
	}{
		{name: "default delimiters", value: "quay.io:robot:pw1 gitlab.com:me:glpat-xyz",
			want: []AuthEntry{{"quay.io", "robot", "pw1"}, {"gitlab.com", "me", "glpat-xyz"}}},
		{name: "password keeps later field delimiters", value: "auth.docker.io:bob:a:b::c",
			want: []AuthEntry{{"auth.docker.io", "bob", "a:b::c"}}},
		{name: "empty entries skipped", value: "  quay.io:robot:pw  ",
			want: []AuthEntry{{"quay.io", "robot", "pw"}}},
		{name: "host with port", value: "registry.local:5000;;;u;;;p", fld: ";;;", entry: " ",
			want: []AuthEntry{{"registry.local:5000", "u", "p"}}},
		{name: "json key with ;;; and :::", entry: ";;;", fld: ":::",
			value: "gcr.io:::_json_key:::" + gcrKey + ";;;\nquay.io:::robot:::p w:x",
			want:  []AuthEntry{{"gcr.io", "_json_key", gcrKey}, {"quay.io", "robot", "p w:x"}}},
		{name: "json key last without trailing delimiter", entry: ";;;", fld: ":::",
			value: "localhost:5001:::_json_key:::" + gcrKey,
			want:  []AuthEntry{{"localhost:5001", "_json_key", gcrKey}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			entry, fld := tt.entry, tt.fld
			if entry == "" {
				entry = DefaultAuthRegistriesDelimiter
			}
			if fld == "" {
				fld = DefaultAuthRegistryDelimiter
			}
			got, err := parseAuthRegistries(tt.value, entry, fld)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("got %d entries, want %d", len(got), len(tt.want))
			}
			for i := range got {
				if got[i].Password != tt.want[i].Password {
					t.Fatalf("entry %d: password not byte-identical (%d vs %d bytes)", i, len(got[i].Password), len(tt.want[i].Password))
				}
			}
		})
	}
}

// TestAuthRegistriesFromEnv goes through Load: the delimiter variables and
// the JSON key surviving byte for byte.
func TestAuthRegistriesFromEnv(t *testing.T) {
	t.Parallel()
	c, err := Load(nil, envMap(map[string]string{
		"AUTH_REGISTRIES":           "gcr.io:::_json_key:::" + gcrKey + ";;;docker.io:::hubuser:::hubpw",
		"AUTH_REGISTRIES_DELIMITER": ";;;",
		"AUTH_REGISTRY_DELIMITER":   ":::",
	}))
	if err != nil {
		t.Fatal(err)
	}
	want := []AuthEntry{{"gcr.io", "_json_key", gcrKey}, {"docker.io", "hubuser", "hubpw"}}
	if !reflect.DeepEqual(c.AuthRegistries, want) {
		t.Fatalf("AuthRegistries differ from what was set (%d entries)", len(c.AuthRegistries))
	}
}

// TestAuthErrorsHideSecrets: every credential error is a KeyError naming
// the key (and for AUTH_REGISTRIES the entry's index and host) and never
// contains a password or a piece of one.
func TestAuthErrorsHideSecrets(t *testing.T) {
	t.Parallel()
	const secret = "S3cr3t-Pa55"
	pwFile := writeFile(t, "pw", secret+"\n")
	tests := []struct {
		name     string
		yaml     string
		env      map[string]string
		key      string
		contains []string
	}{
		{name: "entry without fields", env: map[string]string{"AUTH_REGISTRIES": "quay.io:robot:" + secret + " " + secret},
			key: "AUTH_REGISTRIES", contains: []string{"entry 2"}},
		{name: "password with the entry delimiter", env: map[string]string{"AUTH_REGISTRIES": "quay.io:robot:" + secret[:4] + " " + secret[4:]},
			key: "AUTH_REGISTRIES", contains: []string{"entry 2", "AUTH_REGISTRIES_DELIMITER"}},
		{name: "empty user", env: map[string]string{"AUTH_REGISTRIES": "quay.io::" + secret},
			key: "AUTH_REGISTRIES", contains: []string{"entry 1", `host "quay.io"`, "empty user"}},
		{name: "empty password", env: map[string]string{"AUTH_REGISTRIES": "gcr.io:x:y quay.io:robot:"},
			key: "AUTH_REGISTRIES", contains: []string{"entry 2", `host "quay.io"`, "empty password"}},
		{name: "host with scheme", env: map[string]string{"AUTH_REGISTRIES": "https://quay.io:robot:" + secret},
			key: "AUTH_REGISTRIES", contains: []string{"entry 1", "scheme"}},
		{name: "bad host", env: map[string]string{"AUTH_REGISTRIES": "bad_host!:robot:" + secret},
			key: "AUTH_REGISTRIES", contains: []string{"entry 1", "no registry host[:port]"}},
		{name: "piece of a password with the entry delimiter", env: map[string]string{"AUTH_REGISTRIES": "quay.io:robot:" + secret[:4] + " p@" + secret[4:] + ":x:y"},
			key: "AUTH_REGISTRIES", contains: []string{"entry 2", "AUTH_REGISTRIES_DELIMITER"}},
		{name: "duplicate host", env: map[string]string{"AUTH_REGISTRIES": "docker.io:a:" + secret + " index.docker.io:b:" + secret},
			key: "AUTH_REGISTRIES", contains: []string{"entry 2", "entry 1", "duplicate"}},
		{name: "same delimiters", env: map[string]string{"AUTH_REGISTRIES": "quay.io:robot:" + secret, "AUTH_REGISTRIES_DELIMITER": ":"},
			key: "AUTH_REGISTRY_DELIMITER"},
		{name: "password without username", yaml: "registries:\n  - host: quay.io\n    password: " + secret + "\n",
			key: "registries[0].username"},
		{name: "username without password", yaml: "registries:\n  - host: quay.io\n    username: robot\n",
			key: "registries[0].password"},
		{name: "password is a list", yaml: "registries:\n  - host: quay.io\n    username: robot\n    password: [" + secret + "]\n",
			key: "registries[0].password"},
		{name: "password and passwordFile", yaml: "registries:\n  - host: quay.io\n    username: robot\n    password: " + secret + "\n    passwordFile: " + pwFile + "\n",
			key: "registries[0].passwordFile", contains: []string{"registries[0].password"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			env := map[string]string{}
			for k, v := range tt.env {
				env[k] = v
			}
			if tt.yaml != "" {
				env["CONFIG_FILE"] = writeFile(t, "c.yml", tt.yaml)
			}
			_, err := Load(nil, envMap(env))
			wantKeyError(t, err, tt.key, "")
			msg := err.Error()
			for _, frag := range []string{secret, secret[:4], secret[4:]} {
				if strings.Contains(msg, frag) {
					t.Errorf("error %q contains (part of) the password", msg)
				}
			}
			for _, c := range tt.contains {
				if !strings.Contains(msg, c) {
					t.Errorf("error %q does not name %q", msg, c)
				}
			}
		})
	}
}

// TestKeyErrorNeverPrintsSecretValues: whatever code builds a KeyError
// for a password key with the value set, Error() leaves the value out.
func TestKeyErrorNeverPrintsSecretValues(t *testing.T) {
	t.Parallel()
	for _, key := range []string{"registries[3].password", "AUTH_REGISTRIES", "auth_registries"} {
		e := &KeyError{Key: key, Value: "hunter2-secret", Err: errWant("bad")}
		if strings.Contains(e.Error(), "hunter2") {
			t.Errorf("%s: %q shows the value", key, e.Error())
		}
	}
}

type errWant string

func (e errWant) Error() string { return string(e) }

func TestLoadAuthSettings(t *testing.T) {
	t.Parallel()
	htpasswd := writeFile(t, "htpasswd", "alice:$2y$05$abcdefghijklmnopqrstuv\n")
	dockerCfg := writeFile(t, "config.json", `{"auths":{}}`)
	pwFile := writeFile(t, "pw", "s3cret\n")
	file := writeFile(t, "c.yml", `
dockerConfig: /file/config.json
allowOwnAuth: false
clientAuth:
  htpasswd: /file/htpasswd
  requireForConnect: true
  upstreamCheckTTL: 90s
registries:
  - host: quay.io
    username: robot
    passwordFile: `+pwFile+`
    access:
      mode: users
      users: [alice]
  - host: ghcr.io
    access: {mode: upstream}
`)
	tests := []struct {
		name string
		env  map[string]string
		args []string
		get  func(*Config) any
		want any
	}{
		{name: "htpasswd env over file", env: map[string]string{"HTPASSWD": htpasswd, "DOCKER_CONFIG_FILE": dockerCfg},
			get: func(c *Config) any { return c.ClientAuth.Htpasswd }, want: htpasswd},
		{name: "htpasswd flag over env", env: map[string]string{"HTPASSWD": "/nope", "DOCKER_CONFIG_FILE": dockerCfg}, args: []string{"--htpasswd", htpasswd},
			get: func(c *Config) any { return c.ClientAuth.Htpasswd }, want: htpasswd},
		{name: "docker config env", env: map[string]string{"HTPASSWD": htpasswd, "DOCKER_CONFIG_FILE": dockerCfg},
			get: func(c *Config) any { return c.DockerConfig }, want: dockerCfg},
		{name: "docker config flag", env: map[string]string{"HTPASSWD": htpasswd}, args: []string{"--docker-config=" + dockerCfg},
			get: func(c *Config) any { return c.DockerConfig }, want: dockerCfg},
		{name: "own auth env", env: map[string]string{"HTPASSWD": htpasswd, "DOCKER_CONFIG_FILE": dockerCfg, "ALLOW_OWN_AUTH": "true", "ALLOW_PUSH_WITH_OWN_AUTH": "yes"},
			get: func(c *Config) any { return []bool{c.AllowOwnAuth, c.AllowPushWithOwnAuth} }, want: []bool{true, true}},
		{name: "clientAuth from file", env: map[string]string{"HTPASSWD": htpasswd, "DOCKER_CONFIG_FILE": dockerCfg},
			get: func(c *Config) any {
				return []any{c.ClientAuth.RequireForConnect, time.Duration(c.ClientAuth.UpstreamCheckTTL)}
			},
			want: []any{true, 90 * time.Second}},
		{name: "registry auth from file", env: map[string]string{"HTPASSWD": htpasswd, "DOCKER_CONFIG_FILE": dockerCfg},
			get: func(c *Config) any {
				return []any{c.Registries[0].PasswordFile, c.Registries[0].Access, c.Registries[1].Access}
			},
			want: []any{pwFile, Access{Mode: AccessUsers, Users: []string{"alice"}}, Access{Mode: AccessUpstream}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			env := map[string]string{"CONFIG_FILE": file}
			for k, v := range tt.env {
				env[k] = v
			}
			c, err := Load(tt.args, envMap(env))
			if err != nil {
				t.Fatal(err)
			}
			if got := tt.get(c); !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("got %#v, want %#v", got, tt.want)
			}
		})
	}
}

func TestAuthValidation(t *testing.T) {
	t.Parallel()
	htpasswd := writeFile(t, "htpasswd", "alice:$2y$05$abcdefghijklmnopqrstuv\n")
	notJSON := writeFile(t, "config.json", "auths = 1\n")
	tests := []struct {
		name string
		yaml string
		env  map[string]string
		args []string
		key  string
		want string // whole message when set
	}{
		{name: "unknown mode", yaml: "registries:\n  - host: quay.io\n    access: {mode: private}\n",
			key: "registries[0].access.mode", want: `registries[0].access.mode: invalid value "private": want public, authenticated, users or upstream`},
		{name: "users without list", yaml: "clientAuth: {htpasswd: " + htpasswd + "}\nregistries:\n  - host: quay.io\n    access: {mode: users}\n",
			key: "registries[0].access.users"},
		{name: "list without mode users", yaml: "registries:\n  - host: quay.io\n    access: {mode: public, users: [alice]}\n",
			key: "registries[0].access.users"},
		{name: "authenticated needs htpasswd", yaml: "registries:\n  - host: quay.io\n    access: {mode: authenticated}\n",
			key: "registries[0].access.mode", want: `registries[0].access.mode: invalid value "authenticated": needs proxy users: set clientAuth.htpasswd`},
		{name: "users needs htpasswd, named as env", env: map[string]string{"REGISTRIES": "quay.io"}, yaml: "registries:\n  - host: gcr.io\n    access: {mode: users, users: [bob]}\n",
			key: "registries[0].access.mode"},
		{name: "requireForConnect needs htpasswd", yaml: "clientAuth: {requireForConnect: true}\n",
			key: "clientAuth.requireForConnect"},
		{name: "missing htpasswd file", args: []string{"--htpasswd", "/nonexistent/htpasswd"},
			key: "--htpasswd", want: `--htpasswd: invalid value "/nonexistent/htpasswd": no such file or directory`},
		{name: "missing docker config", env: map[string]string{"DOCKER_CONFIG_FILE": "/nonexistent/config.json"},
			key: "DOCKER_CONFIG_FILE"},
		{name: "docker config not JSON", args: []string{"--docker-config", notJSON},
			key: "--docker-config"},
		{name: "unreadable passwordFile", yaml: "registries:\n  - host: quay.io\n    username: robot\n    passwordFile: /nonexistent/pw\n",
			key: "registries[0].passwordFile", want: `registries[0].passwordFile: invalid value "/nonexistent/pw": no such file or directory`},
		{name: "passwordFile without username", yaml: "registries:\n  - host: quay.io\n    passwordFile: " + htpasswd + "\n",
			key: "registries[0].username"},
		{name: "zero upstreamCheckTTL", yaml: "clientAuth: {upstreamCheckTTL: 0s}\n",
			key: "clientAuth.upstreamCheckTTL"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			env := map[string]string{}
			for k, v := range tt.env {
				env[k] = v
			}
			if tt.yaml != "" {
				env["CONFIG_FILE"] = writeFile(t, "c.yml", tt.yaml)
			}
			_, err := Load(tt.args, envMap(env))
			wantKeyError(t, err, tt.key, tt.want)
		})
	}
}
