//go:build lean

package main

// cloudDrivers is empty in a lean build: see needDriver.
var cloudDrivers []string
