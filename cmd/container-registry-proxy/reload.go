package main

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"os/signal"
	"slices"
	"sync"
	"syscall"

	"github.com/gmarcy/container-registry-proxy/config"
	"github.com/sirupsen/logrus"
)

// reloader rebuilds the credentials and the access policy from a fresh
// reading of the configuration and swaps them in (SIGHUP): the clients
// keep their connections and tokens (tokens are cached per identity, so
// new credentials fetch new ones).
type reloader struct {
	ups   *upstreams
	hosts []string // the served upstreams: a reload cannot change them

	// load reads the configuration again (--config file, environment,
	// flags); nil: reloading is not possible.
	load func() (*config.Config, error)
	mu   sync.Mutex // one reload at a time
}

func newReloader(cfg *config.Config, ups *upstreams) *reloader {
	return &reloader{ups: ups, hosts: upstreamHosts(cfg)}
}

func upstreamHosts(cfg *config.Config) []string {
	return slices.Sorted(maps.Keys(cfg.Namespaces()))
}

// apply builds the keychain and policy of cfg and puts them in force; on
// any error the old ones stay and the error names the key at fault.
func (r *reloader) apply(cfg *config.Config) error {
	if got := upstreamHosts(cfg); !slices.Equal(got, r.hosts) {
		return fmt.Errorf("registries: the list of registries changed (%v, serving %v): that needs a restart", got, r.hosts)
	}
	kc, err := newKeychain(cfg)
	if err != nil {
		return err
	}
	policy, err := buildPolicy(cfg, kc, r.ups.clients)
	if err != nil {
		return err
	}
	r.ups.keys.Swap(kc)
	r.ups.guard.Swap(policy, cfg.AllowOwnAuth)
	return nil
}

// reload reads the configuration again and applies it, logging the
// outcome in one line.
func (r *reloader) reload(log *logrus.Logger) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.load == nil {
		err := errors.New("no configuration source to reload from")
		log.WithError(err).Error("reload failed; the old credentials and access policy stay in force")
		return err
	}
	cfg, err := r.load()
	if err == nil {
		err = r.apply(cfg)
	}
	if err != nil {
		log.WithField("error", oneLine(err)).Error("reload failed; the old credentials and access policy stay in force")
		return err
	}
	modes := logrus.Fields{}
	p := r.ups.guard.Policy()
	for _, h := range r.hosts {
		modes["access."+h] = p.Mode(h).String()
	}
	log.WithFields(modes).Info("reloaded credentials and access policy")
	return nil
}

// reloadOnHangup reloads on every SIGHUP until ctx ends.
func reloadOnHangup(ctx context.Context, r *reloader, log *logrus.Logger) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	go func() {
		defer signal.Stop(hup)
		for {
			select {
			case <-ctx.Done():
				return
			case <-hup:
				log.Info("SIGHUP: reloading credentials and access policy")
				if err := r.reload(log); err != nil {
					continue // logged by reload; the old policy stays
				}
			}
		}
	}()
}
