package natstest

import "testing"

func TestClusterStarts(t *testing.T) {
	c := StartCluster(t, 3)
	if len(c.Nodes) != 3 {
		t.Fatalf("nodes: %d", len(c.Nodes))
	}
}
