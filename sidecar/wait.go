package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	"time"
)

// runWait is `sidecar wait`: poll the admin listener's /readyz until it
// answers 200, or fail after -timeout. An injected pod on a cluster without
// native sidecars runs it as the sidecar container's postStart hook, which
// holds the application containers back until the sidecar is ready.
func runWait(ctx context.Context, args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("sidecar wait", flag.ContinueOnError)
	fs.SetOutput(stderr)
	admin := fs.String("admin", "127.0.0.1:15000", "the sidecar's admin `address`")
	timeout := fs.Duration("timeout", 2*time.Minute, "how long to wait for /readyz")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("wait: unexpected argument %q", fs.Arg(0))
	}
	if *timeout <= 0 {
		return fmt.Errorf("wait: -timeout %s: want a positive duration", *timeout)
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	client := &http.Client{Timeout: time.Second}
	defer client.CloseIdleConnections()
	url := "http://" + *admin + "/readyz"
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	var last error // the last answer or failure before the deadline
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return fmt.Errorf("wait: -admin %q: %w", *admin, err)
		}
		resp, err := client.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("%s: %s", url, resp.Status)
		}
		if ctx.Err() == nil || last == nil {
			last = err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait: the sidecar was not ready within %s: %w", *timeout, last)
		case <-tick.C:
		}
	}
}
