// Package s3uploads clears the multipart uploads that the cache's S3
// bucket keeps for writers that never finished. A blob reaches S3 through
// the storage driver's Writer, which is an S3 multipart upload, and a
// large Move into place is a multipart copy. A process killed in the
// middle of either leaves a multipart upload that S3 keeps, and bills,
// until it is aborted, and that no List of the bucket ever shows
// (storage.Store.PurgeUploads cannot see it). Purge aborts those older
// than a fill may take.
//
// It talks to S3 with the SDK that distribution's s3 driver uses
// (aws-sdk-go v1), configured from the same parameters as the driver. It
// belongs to builds with the cloud drivers only: the lean build never
// imports it.
package s3uploads

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go/aws"
	"github.com/aws/aws-sdk-go/aws/awserr"
	"github.com/aws/aws-sdk-go/aws/credentials"
	"github.com/aws/aws-sdk-go/aws/endpoints"
	"github.com/aws/aws-sdk-go/aws/session"
	"github.com/aws/aws-sdk-go/service/s3"
)

// DefaultAge is the age past which Purge aborts an upload when the caller
// knows no better bound (the fill timeout).
const DefaultAge = time.Hour

// Upload is a multipart upload in progress.
type Upload struct {
	// Key is the object key (the driver's root directory included).
	Key string
	ID  string
	// Initiated is when the upload began, as the server reports it.
	// (versitygw's posix backend reports the time of its last part.)
	Initiated time.Time
}

// Uploads is the multipart uploads of one bucket under the storage
// driver's root directory.
type Uploads struct {
	client *s3.S3
	bucket string
	prefix string
}

// New returns the multipart uploads of bucket under rootDirectory (the s3
// driver's parameter of that name), through client.
func New(client *s3.S3, bucket, rootDirectory string) *Uploads {
	// The driver's key of a path p is TrimLeft(TrimRight(root, "/")+p, "/").
	prefix := strings.TrimLeft(strings.TrimRight(rootDirectory, "/")+"/", "/")
	return &Uploads{client: client, bucket: bucket, prefix: prefix}
}

// List returns the multipart uploads under the root directory, by key.
func (u *Uploads) List(ctx context.Context) ([]Upload, error) {
	var out []Upload
	in := &s3.ListMultipartUploadsInput{Bucket: aws.String(u.bucket), Prefix: aws.String(u.prefix)}
	for {
		resp, err := u.client.ListMultipartUploadsWithContext(ctx, in)
		if err != nil {
			return out, fmt.Errorf("s3 bucket %s: listing multipart uploads: %w", u.bucket, err)
		}
		for _, up := range resp.Uploads {
			out = append(out, Upload{Key: aws.StringValue(up.Key), ID: aws.StringValue(up.UploadId), Initiated: aws.TimeValue(up.Initiated)})
		}
		if !aws.BoolValue(resp.IsTruncated) || (resp.NextKeyMarker == nil && resp.NextUploadIdMarker == nil) {
			return out, nil
		}
		in.KeyMarker, in.UploadIdMarker = resp.NextKeyMarker, resp.NextUploadIdMarker
	}
}

// Purge aborts the multipart uploads under the root directory that were
// initiated more than olderThan ago (olderThan <= 0: all of them) and
// returns how many it aborted. Uploads of writers still running, in this
// process or another one sharing the bucket, are younger than a fill may
// take: pass that bound. An upload that is gone by the time it is
// aborted (completed or aborted by its writer) is not counted; other
// failures are returned together after the rest was tried.
func (u *Uploads) Purge(ctx context.Context, olderThan time.Duration) (int, error) {
	ups, err := u.List(ctx)
	if err != nil {
		return 0, err
	}
	cutoff := time.Now().Add(-olderThan)
	n := 0
	var errs []error
	for _, up := range ups {
		if olderThan > 0 && up.Initiated.After(cutoff) {
			continue
		}
		_, err := u.client.AbortMultipartUploadWithContext(ctx, &s3.AbortMultipartUploadInput{
			Bucket: aws.String(u.bucket), Key: aws.String(up.Key), UploadId: aws.String(up.ID),
		})
		var ae awserr.Error
		switch {
		case err == nil:
			n++
		case errors.As(err, &ae) && ae.Code() == s3.ErrCodeNoSuchUpload:
		default:
			errs = append(errs, fmt.Errorf("s3 bucket %s: aborting the upload of %s: %w", u.bucket, up.Key, err))
		}
		if ctx.Err() != nil {
			break
		}
	}
	return n, errors.Join(errs...)
}

// PurgeEvery runs Purge(olderThan) at once and then every interval until
// ctx ends, and tells report what each run did.
func (u *Uploads) PurgeEvery(ctx context.Context, olderThan, interval time.Duration, report func(aborted int, err error)) {
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		n, err := u.Purge(ctx, olderThan)
		if ctx.Err() != nil {
			return
		}
		report(n, err)
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// FromParameters returns the multipart uploads of the bucket that
// distribution's s3 driver would use with the same parameters (the
// storage.s3 section of the configuration): bucket, rootdirectory,
// region, regionendpoint, accesskey and secretkey (without them the SDK's
// default credential chain), forcepathstyle, secure, skipverify,
// usedualstack, accelerate and usefipsendpoint. Only v4 signatures are
// supported (v4auth: false is refused).
func FromParameters(params map[string]any) (*Uploads, error) {
	bucket := str(params, "bucket")
	if bucket == "" {
		return nil, errors.New("s3: no bucket parameter provided")
	}
	flags := map[string]bool{"forcepathstyle": false, "secure": true, "skipverify": false, "v4auth": true,
		"usedualstack": false, "accelerate": false, "usefipsendpoint": false}
	for name, def := range flags {
		v, err := boolParam(params, name, def)
		if err != nil {
			return nil, err
		}
		flags[name] = v
	}
	if !flags["v4auth"] {
		return nil, errors.New("s3: v4auth: false (v2 signatures) is not supported for clearing multipart uploads")
	}
	sess, err := session.NewSession(awsConfig(params, flags))
	if err != nil {
		return nil, fmt.Errorf("s3: %w", err)
	}
	return New(s3.New(sess), bucket, str(params, "rootdirectory")), nil
}

// awsConfig is the SDK configuration of the driver's parameters, as the
// driver builds it.
func awsConfig(params map[string]any, flags map[string]bool) *aws.Config {
	region := str(params, "region")
	if region == "" {
		region = "us-east-1" // S3's default; endpoints of other servers rarely check it
	}
	// A client of its own: the SDK would otherwise use, and with a CA
	// bundle in the environment (AWS_CA_BUNDLE) rewrite, http.DefaultClient.
	client := &http.Client{}
	if flags["skipverify"] {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.TLSClientConfig = &tls.Config{InsecureSkipVerify: true} //nolint:gosec // G402: the operator's skipverify, as the driver honours it
		client.Transport = tr
	}
	cfg := aws.NewConfig().
		WithHTTPClient(client).
		WithRegion(region).
		WithS3ForcePathStyle(flags["forcepathstyle"]).
		WithS3UseAccelerate(flags["accelerate"]).
		WithDisableSSL(!flags["secure"])
	if ak, sk := str(params, "accesskey"), str(params, "secretkey"); ak != "" && sk != "" {
		cfg.WithCredentials(credentials.NewStaticCredentials(ak, sk, ""))
	}
	if ep := str(params, "regionendpoint"); ep != "" {
		cfg.WithEndpoint(ep)
	}
	if flags["usedualstack"] {
		cfg.UseDualStackEndpoint = endpoints.DualStackEndpointStateEnabled
	}
	if flags["usefipsendpoint"] {
		cfg.UseFIPSEndpoint = endpoints.FIPSEndpointStateEnabled
	}
	return cfg
}

// str returns a parameter as a string ("" when absent).
func str(params map[string]any, name string) string {
	v, ok := params[name]
	if !ok || v == nil {
		return ""
	}
	return fmt.Sprint(v)
}

// boolParam reads a boolean parameter given as a bool or a string, as the
// driver does.
func boolParam(params map[string]any, name string, def bool) (bool, error) {
	switch v := params[name].(type) {
	case nil:
		return def, nil
	case bool:
		return v, nil
	case string:
		b, err := strconv.ParseBool(v)
		if err != nil {
			return false, fmt.Errorf("s3: the %s parameter should be a boolean", name)
		}
		return b, nil
	default:
		return false, fmt.Errorf("s3: the %s parameter should be a boolean", name)
	}
}
