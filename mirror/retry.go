package mirror

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"syscall"
	"time"

	"oras.land/oras-go/v2/content"
	"oras.land/oras-go/v2/registry/remote/errcode"
)

// retryAttempts is how many times a whole image or blob is tried.
const retryAttempts = 4

// retry runs op until it succeeds, fails for good (not transient), or has
// had attempts tries, waiting a little longer after each; retried counts
// the extra tries. The HTTP transport already retries single requests
// (5xx, 429): this is for what it cannot, a body cut off mid-blob.
func (c *Client) retry(ctx context.Context, attempts int, op func() error) error {
	return c.retryIf(ctx, attempts, transient, op)
}

func (c *Client) retryIf(ctx context.Context, attempts int, retryable func(error) bool, op func() error) error {
	for attempt := 1; ; attempt++ {
		err := op()
		if err == nil || attempt >= attempts || !retryable(err) || ctx.Err() != nil {
			return err
		}
		if c.opts.Retries != nil {
			c.opts.Retries.Add(1)
		}
		select {
		case <-time.After(time.Duration(attempt) * 500 * time.Millisecond):
		case <-ctx.Done():
			return err
		}
	}
}

// transient reports, by error type, errors worth another attempt: a
// connection that broke or timed out mid-transfer, a body cut off, bytes
// that did not hash to their digest. A failed dial is not: the host is
// wrong, down or not allowed, and retrying only delays saying so.
func transient(err error) bool {
	var opErr *net.OpError
	var netErr net.Error
	return errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) ||
		errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, content.ErrMismatchedDigest) ||
		(errors.As(err, &opErr) && opErr.Op != "dial") || (errors.As(err, &netErr) && netErr.Timeout())
}

// uploadTransient adds the registry's 5xx and 429 answers to transient:
// the HTTP transport retries those for requests it can replay, but not
// for an upload streamed from the bundle, which only a new read can redo.
// So is a 401 on the upload itself: its bearer token expired mid-push
// (Harbor's and GitLab's last minutes), and the auth client, which
// fetches a fresh one, cannot replay a streamed body. Wrong credentials
// fail at the token service (a GET), before any upload.
func uploadTransient(err error) bool {
	var resp *errcode.ErrorResponse
	if !errors.As(err, &resp) {
		return transient(err)
	}
	expired := resp.StatusCode == http.StatusUnauthorized && (resp.Method == http.MethodPut || resp.Method == http.MethodPatch)
	return transient(err) || resp.StatusCode >= 500 || resp.StatusCode == http.StatusTooManyRequests || expired
}
