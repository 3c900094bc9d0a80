//go:build !lean

package main

import (
	"context"
	"time"

	// The cloud storage drivers: left out of lean builds, whose process
	// runs the full build beside it when the configuration names one.
	_ "github.com/distribution/distribution/v3/registry/storage/driver/azure"
	_ "github.com/distribution/distribution/v3/registry/storage/driver/gcs"
	_ "github.com/distribution/distribution/v3/registry/storage/driver/s3-aws"
	"github.com/gmarcy/container-registry-proxy/storage/s3uploads"
	"github.com/sirupsen/logrus"
)

var cloudDrivers = []string{"s3", "gcs", "azure"}

// driverUploadsEvery is how often abandoned multipart uploads are looked
// for after the first time, at start.
const driverUploadsEvery = time.Hour

// purgeDriverUploads clears, with the s3 driver, the multipart uploads
// that writers killed mid-upload left in the bucket under the driver's
// root directory: S3 keeps them, and bills them, until they are aborted,
// and no List shows them (Store.PurgeUploads cannot). It runs on its own
// goroutine until ctx ends: at once, then every hour, aborting those
// initiated more than olderThan ago (the fill timeout: every writer of a
// replica sharing the bucket is younger; DefaultAge when unset).
func purgeDriverUploads(ctx context.Context, log *logrus.Logger, name string, params map[string]any, olderThan time.Duration) {
	if name != "s3" && name != "s3aws" {
		return
	}
	if olderThan <= 0 {
		olderThan = s3uploads.DefaultAge
	}
	uploads, err := s3uploads.FromParameters(params)
	if err != nil {
		log.WithError(err).Warn("abandoned multipart uploads of the bucket will not be cleared")
		return
	}
	first := true // the goroutine's own
	go uploads.PurgeEvery(ctx, olderThan, driverUploadsEvery, func(n int, err error) {
		entry := log.WithField("count", n).WithField("olderThan", olderThan.String())
		switch {
		case err != nil:
			entry.WithError(err).Warn("clearing multipart uploads abandoned in the bucket")
		case n > 0 || first:
			entry.Info("aborted multipart uploads abandoned in the bucket by an earlier run (a crash)")
		default:
			entry.Debug("no multipart uploads abandoned in the bucket")
		}
		first = false
	})
}
