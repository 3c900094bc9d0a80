//go:build lean

package main

import (
	"context"
	"time"

	"github.com/sirupsen/logrus"
)

// cloudDrivers is empty in a lean build: see needDriver.
var cloudDrivers []string

// purgeDriverUploads has nothing to do in a lean build: it has no cloud
// driver (see drivers_cloud.go).
func purgeDriverUploads(context.Context, *logrus.Logger, string, map[string]any, time.Duration) {}
