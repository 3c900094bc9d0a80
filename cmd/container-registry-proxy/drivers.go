package main

import (
	"fmt"
	"os"
	"slices"
	"strings"
	"syscall"

	// The storage drivers of every build; drivers_cloud.go adds the
	// others unless the build is lean.
	_ "github.com/distribution/distribution/v3/registry/storage/driver/filesystem"
	_ "github.com/distribution/distribution/v3/registry/storage/driver/inmemory"
)

// fullSuffix names the build with every storage driver when it is
// installed beside a lean one: the container image holds
// /container-registry-proxy (lean, the entrypoint) and
// /container-registry-proxy-full.
const fullSuffix = "-full"

// drivers lists the storage drivers compiled into this binary.
func drivers() []string {
	return append([]string{"filesystem", "inmemory"}, cloudDrivers...)
}

// needDriver makes sure that this binary has the storage driver name.
// A lean build (-tags lean: filesystem and inmemory only, about 20 MiB
// less resident memory, because the cloud SDKs' code and their init work
// are left out) replaces itself with the full build beside it, with the
// same arguments and environment, so the PID and the caller's view stay
// the same. Without one, the error names the key and the way out.
func needDriver(name string) error {
	if slices.Contains(drivers(), name) {
		return nil
	}
	exe, err := os.Executable()
	if err == nil {
		full := exe + fullSuffix
		if fi, serr := os.Stat(full); serr == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			// full is this executable's own path plus a fixed suffix.
			err = syscall.Exec(full, append([]string{full}, os.Args[1:]...), os.Environ()) //nolint:gosec // G204: see above
			return fmt.Errorf("storage.%s: this build has only the %s drivers, and running %s failed: %w", name, strings.Join(drivers(), " and "), full, err)
		}
	}
	return fmt.Errorf("storage.%s: this build has only the %s drivers (built with -tags lean): install container-registry-proxy%s beside it (the container image has it) or build without -tags lean", name, strings.Join(drivers(), " and "), fullSuffix)
}
