// The fleet-relay program is a placeholder until its issue lands: it prints its
// version and help.
package main

import (
	"fmt"
	"os"

	"github.com/robotfleet/fleetlink/internal/version"
)

func main() {
	if len(os.Args) > 1 && (os.Args[1] == "--version" || os.Args[1] == "version") {
		fmt.Println("fleet-relay", version.String())
		return
	}
	fmt.Println("fleet-relay", version.String(), "— not implemented yet; see README")
}
