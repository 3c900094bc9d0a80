package config

import (
	"strings"
	"testing"
)

// TestHardeningSettings: status.showRepositories, admin.token(File) and
// clientAuth.maxFailedLogins are read from YAML and the environment with
// their defaults, and bad values are one error naming the key (never the
// token itself).
func TestHardeningSettings(t *testing.T) {
	t.Parallel()
	c, err := Load(nil, envMap(nil))
	if err != nil {
		t.Fatal(err)
	}
	if !c.Status.ShowRepositories || c.ClientAuth.MaxFailedLogins != 10 || c.Admin.Token != "" || c.Admin.TokenFile != "" {
		t.Fatalf("defaults: %+v %+v %d", c.Status, c.Admin, c.ClientAuth.MaxFailedLogins)
	}
	tokenFile := writeFile(t, "admin-token", "0123456789abcdef0123\n")
	c, err = Load(nil, envMap(map[string]string{"STATUS_SHOW_REPOSITORIES": "false", "ADMIN_TOKEN_FILE": tokenFile}))
	if err != nil {
		t.Fatal(err)
	}
	if c.Status.ShowRepositories || c.Admin.TokenFile != tokenFile {
		t.Fatalf("from the environment: %+v %+v", c.Status, c.Admin)
	}
	f := writeFile(t, "c.yml", "status:\n  showRepositories: false\nadmin:\n  token: 0123456789abcdef-yaml\nclientAuth:\n  maxFailedLogins: 0\n")
	c, err = Load([]string{"--config", f}, envMap(nil))
	if err != nil {
		t.Fatal(err)
	}
	if c.Status.ShowRepositories || c.Admin.Token != "0123456789abcdef-yaml" || c.ClientAuth.MaxFailedLogins != 0 {
		t.Fatalf("from YAML: %+v %+v %d", c.Status, c.Admin, c.ClientAuth.MaxFailedLogins)
	}

	_, err = Load(nil, envMap(map[string]string{"ADMIN_TOKEN": "short-secret"}))
	wantKeyError(t, err, "ADMIN_TOKEN", "")
	if strings.Contains(err.Error(), "short-secret") {
		t.Fatalf("the error shows the token: %v", err)
	}
	_, err = Load(nil, envMap(map[string]string{"ADMIN_TOKEN": "0123456789abcdef0123", "ADMIN_TOKEN_FILE": tokenFile}))
	wantKeyError(t, err, "ADMIN_TOKEN_FILE", "")
	_, err = Load(nil, envMap(map[string]string{"ADMIN_TOKEN_FILE": tokenFile + ".missing"}))
	wantKeyError(t, err, "ADMIN_TOKEN_FILE", "")
	_, err = Load([]string{"--config", writeFile(t, "c.yml", "clientAuth:\n  maxFailedLogins: -1\n")}, envMap(nil))
	wantKeyError(t, err, "clientAuth.maxFailedLogins", "")
	_, err = Load(nil, envMap(map[string]string{"STATUS_SHOW_REPOSITORIES": "maybe"}))
	wantKeyError(t, err, "STATUS_SHOW_REPOSITORIES", "")
}
