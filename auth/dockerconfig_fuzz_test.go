package auth

import (
	"encoding/base64"
	"encoding/json"
	"slices"
	"strings"
	"testing"

	"github.com/gmarcy/container-registry-proxy/oci"
)

// FuzzDockerConfig: whatever a Docker config.json holds, the keychain
// keeps credentials only under canonical valid hosts and helper names a
// shell cannot misread, and an error quotes no password, auth string or
// identity token of the file.
func FuzzDockerConfig(f *testing.F) {
	auth := base64.StdEncoding.EncodeToString([]byte("user:s3cret-passw0rd"))
	for _, s := range []string{
		`{"auths":{"https://index.docker.io/v1/":{"auth":"` + auth + `"}}}`,
		`{"auths":{"quay.io":{"username":"u","password":"p"},"https://quay.io":{"auth":"` + auth + `"}}}`,
		`{"auths":{"ghcr.io":{"identitytoken":"tok-0123456789"}},"credsStore":"desktop"}`,
		`{"auths":{"localhost:5000":{}},"credHelpers":{"gcr.io":"gcloud","x":"../evil"}}`,
		`{"auths":{"reg.test":{"auth":"not base64!!"}}}`, `{"auths":{"reg.test":{"auth":"` + base64.StdEncoding.EncodeToString([]byte("nocolon-secret")) + `"}}}`,
		`{"auths":{"":{"auth":"` + auth + `"}}}`, `{"auths":{"a b":{"password":"pw-0123456789"}}}`, `{"credsStore":"a;rm -rf /"}`,
		`{"auths":{"reg.test":{"password":12345678901}}}`, `{"auths":[]}`, `{"auths":{"reg.test":{"auth":"` + auth + `"}}`, ``, `null`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		dc, err := parseDockerConfig(data)
		if err != nil {
			checkDockerConfigError(t, data, err)
			return
		}
		for host, c := range dc.auths {
			if !oci.ValidHost(host) || oci.CanonicalHost(host) != host || c.IsZero() {
				t.Fatalf("credentials %v under host %q", c.IsZero(), host)
			}
		}
		for host, h := range dc.helpers {
			if !oci.ValidHost(host) || oci.CanonicalHost(host) != host || !helperNameRE.MatchString(h) {
				t.Fatalf("helper %q under host %q", h, host)
			}
		}
		if dc.store != "" && !helperNameRE.MatchString(dc.store) {
			t.Fatalf("credsStore %q", dc.store)
		}
	})
}

// checkDockerConfigError asserts that an error of parseDockerConfig quotes
// none of the file's secrets (those of 8 bytes or more that are not also
// server keys or helper names, which errors may name).
func checkDockerConfigError(t *testing.T, data []byte, err error) {
	t.Helper()
	msg := err.Error()
	var raw struct {
		Auths       map[string]map[string]any `json:"auths"`
		CredHelpers map[string]any            `json:"credHelpers"`
		CredsStore  any                       `json:"credsStore"`
	}
	_ = json.Unmarshal(data, &raw)
	// What an error may name: server keys and helper names.
	named := []string{stringOf(raw.CredsStore)}
	var secrets []string
	for key, fields := range raw.Auths {
		named = append(named, key)
		for name, v := range fields {
			s, ok := v.(string)
			if !ok || name == "username" {
				continue
			}
			secrets = append(secrets, s)
			if dec, err := base64.StdEncoding.DecodeString(strings.TrimSpace(s)); err == nil {
				secrets = append(secrets, string(dec))
				if _, pass, ok := strings.Cut(string(dec), ":"); ok {
					secrets = append(secrets, pass)
				}
			}
		}
	}
	for key, v := range raw.CredHelpers {
		named = append(named, key, stringOf(v))
	}
	for _, s := range secrets {
		if len(s) < 8 || !strings.Contains(msg, s) {
			continue
		}
		if !slices.ContainsFunc(named, func(n string) bool { return strings.Contains(n, s) }) {
			t.Fatalf("error %q quotes the secret %q", msg, s)
		}
	}
}

// stringOf is v as text when it is a string.
func stringOf(v any) string {
	s, _ := v.(string)
	return s
}
