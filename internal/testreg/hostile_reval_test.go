package testreg

import (
	"encoding/json"
	"net/http"
	"testing"
)

// TestThrottle: Throttle answers every /v2/ request but /v2/ itself with
// its status, OCI error body and Retry-After (none when ""), until it is
// turned off.
func TestThrottle(t *testing.T) {
	t.Parallel()
	reg := Start(t, Options{TLS: true})
	reg.PushImage(t, "app", "v1")
	c := reg.Client()
	for _, tc := range []struct {
		status int
		ra     string
	}{{429, "120"}, {503, "Fri, 01 Jan 2100 00:00:00 GMT"}, {429, ""}} {
		reg.Throttle(tc.status, tc.ra)
		for _, path := range []string{"/v2/app/manifests/v1", "/v2/app/tags/list", "/v2/app/blobs/sha256:" + zeros} {
			resp, err := c.Get(reg.URL + path)
			if err != nil {
				t.Fatal(err)
			}
			var env struct {
				Errors []struct{ Code string } `json:"errors"`
			}
			err = json.NewDecoder(resp.Body).Decode(&env)
			resp.Body.Close()
			if resp.StatusCode != tc.status || err != nil || len(env.Errors) != 1 || env.Errors[0].Code != errorCode(tc.status) {
				t.Fatalf("%s: %d %+v %v", path, resp.StatusCode, env, err)
			}
			if ra := resp.Header.Get("Retry-After"); ra != tc.ra {
				t.Fatalf("%s: Retry-After %q, want %q", path, ra, tc.ra)
			}
		}
	}
	reg.Throttle(0, "")
	if resp, err := c.Get(reg.URL + "/v2/app/tags/list"); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("after Throttle(0): %v %v", resp, err)
	} else {
		resp.Body.Close()
	}
}

const zeros = "0000000000000000000000000000000000000000000000000000000000000000"

// TestStall: a stalled request is counted, sends nothing until Unstall,
// then is served as usual; /v2/ itself is spared.
func TestStall(t *testing.T) {
	t.Parallel()
	reg := Start(t, Options{TLS: true})
	reg.PushImage(t, "app", "v1")
	c := reg.Client()
	reg.Stall()
	if resp, err := c.Get(reg.URL + "/v2/"); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("/v2/ while stalled: %v %v", resp, err)
	} else {
		resp.Body.Close()
	}
	done := make(chan int, 1)
	go func() {
		resp, err := c.Get(reg.URL + "/v2/app/tags/list")
		if err != nil {
			done <- 0
			return
		}
		resp.Body.Close()
		done <- resp.StatusCode
	}()
	reg.WaitStalled(t, 1)
	recs := reg.Requests()
	if last := recs[len(recs)-1]; last.Kind != KindTags || last.Status != 0 {
		t.Fatalf("stalled request recorded as %+v, want a tags request without status", last)
	}
	select {
	case code := <-done:
		t.Fatalf("stalled request answered %d before Unstall", code)
	default:
	}
	reg.Unstall()
	if code := <-done; code != http.StatusOK {
		t.Fatalf("after Unstall: %d", code)
	}
	if n := reg.Stalled(); n != 0 {
		t.Fatalf("%d requests still stalled", n)
	}
}
