//go:build !lean

package main

import (
	// The cloud storage drivers: left out of lean builds, whose process
	// runs the full build beside it when the configuration names one.
	_ "github.com/distribution/distribution/v3/registry/storage/driver/azure"
	_ "github.com/distribution/distribution/v3/registry/storage/driver/gcs"
	_ "github.com/distribution/distribution/v3/registry/storage/driver/s3-aws"
)

var cloudDrivers = []string{"s3", "gcs", "azure"}
