package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/signal"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/gmarcy/container-registry-proxy/auth"
	"github.com/gmarcy/container-registry-proxy/config"
	"github.com/gmarcy/container-registry-proxy/oci"
	"github.com/gmarcy/container-registry-proxy/upstream"
	"github.com/sirupsen/logrus"
)

// swapSource is the upstream credentials every registry client consults: a
// keychain that a reload replaces without rebuilding the clients (their
// connections and cached tokens stay; tokens are cached per identity, so
// new credentials fetch new ones).
type swapSource struct{ kc atomic.Pointer[auth.Keychain] }

func newSwapSource(kc *auth.Keychain) *swapSource {
	s := &swapSource{}
	s.kc.Store(kc)
	return s
}

// Lookup implements auth.Source with the current keychain.
func (s *swapSource) Lookup(ctx context.Context, host string) (auth.Credentials, bool, error) {
	return s.kc.Load().Lookup(ctx, host)
}

// Invalidate implements auth.Source with the current keychain.
func (s *swapSource) Invalidate(host string) { s.kc.Load().Invalidate(host) }

// accessState is who may read what: swapped as one on reload.
type accessState struct {
	policy       *auth.Policy
	allowOwnAuth bool
}

// reloader holds what SIGHUP reloads, the credentials and the access
// policy, behind atomic pointers read by every request, and rebuilds them
// from a fresh reading of the configuration.
type reloader struct {
	src     *swapSource
	state   atomic.Pointer[accessState]
	clients map[string]*upstream.Registry
	hosts   []string // the served upstreams: a reload cannot change them

	// load reads the configuration again (--config file, environment,
	// flags); nil: reloading is not possible.
	load func() (*config.Config, error)
	mu   sync.Mutex // one reload at a time
}

func newReloader(cfg *config.Config, src *swapSource, clients map[string]*upstream.Registry, policy *auth.Policy) *reloader {
	r := &reloader{src: src, clients: clients, hosts: upstreamHosts(cfg)}
	r.state.Store(&accessState{policy: policy, allowOwnAuth: cfg.AllowOwnAuth})
	return r
}

func upstreamHosts(cfg *config.Config) []string {
	var hosts []string
	for _, rc := range cfg.Upstreams() {
		hosts = append(hosts, oci.CanonicalHost(rc.Host))
	}
	slices.Sort(hosts)
	return hosts
}

// policy returns the access policy in force.
func (r *reloader) policy() *auth.Policy { return r.state.Load().policy }

// check is mirror.Options.Access with the policy in force.
func (r *reloader) check(req *http.Request, host, repo, kind, ref string) (context.Context, string, error) {
	s := r.state.Load()
	return s.policy.Check(req, host, repo, kind, ref, s.allowOwnAuth)
}

// checkBase is mirror.Options.Base with the policy in force.
func (r *reloader) checkBase(req *http.Request) error { return r.policy().CheckBase(req) }

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
	policy, err := buildPolicy(cfg, kc, r.clients)
	if err != nil {
		return err
	}
	r.src.kc.Store(kc)
	r.state.Store(&accessState{policy: policy, allowOwnAuth: cfg.AllowOwnAuth})
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
	p := r.policy()
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
				_ = r.reload(log)
			}
		}
	}()
}
