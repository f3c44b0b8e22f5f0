package metrics

// RealMounts exposes realMounts to the tests.
var RealMounts = realMounts
