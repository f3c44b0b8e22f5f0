// The genmodels program writes the generated sample ONNX models (an MLP, a
// MatMul model, a CNN, at opsets 11 and 17, plus one larger MLP) into a
// directory, for the demo and for trying the quantizer by hand.
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"github.com/robotfleet/fleetlink/agent/onnxq/internal/testmodels"
)

func main() {
	seed := flag.Uint64("seed", 1, "random seed of the weights")
	big := flag.Bool("big", true, "also write big_mlp.onnx (~8 MB)")
	flag.Usage = func() { fmt.Fprintln(os.Stderr, "usage: genmodels [-seed N] [-big=false] DIR") }
	flag.Parse()
	if flag.NArg() != 1 {
		flag.Usage()
		os.Exit(2)
	}
	dir := flag.Arg(0)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		fmt.Fprintln(os.Stderr, "genmodels:", err)
		os.Exit(1)
	}
	paths, err := testmodels.WriteAll(dir, *seed)
	if err == nil && *big {
		p := filepath.Join(dir, "big_mlp.onnx")
		err = os.WriteFile(p, testmodels.Big(17, *seed, 1024, 2), 0o644)
		paths["big_mlp"] = p
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "genmodels:", err)
		os.Exit(1)
	}
	fmt.Printf("genmodels: wrote %d models to %s\n", len(paths), dir)
}
