package main

import (
	"context"
	_ "embed"
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
)

// exampleConfig is the commented sample config: every option with its default.
//
//go:embed fleetctl.example.yaml
var exampleConfig string

func init() {
	register(&command{
		name:    "config example",
		summary: "print the commented sample config file",
		help: "Prints a config file with every option commented and set to its default:\n" +
			"  fleetctl config example > ~/.config/fleetctl/config.yaml\n" +
			"With --json prints {\"path\", \"content\"}: the default path and the file.",
		define: defineConfigExample,
	})
	register(&command{
		name:    "config check",
		summary: "print the broker options in effect and where each came from",
		help: "Resolves the broker options as every MQTT command does (flags, FLEETCTL_*,\n" +
			"the config file, defaults), checks them, and prints them with the password\n" +
			"masked. Exits 2 when an option is wrong, naming it. It does not connect.",
		define: defineConfigCheck,
	})
}

func defineConfigExample(fs *flag.FlagSet) runFunc {
	asJSON := fs.Bool("json", false, "print the path and the file as JSON")
	return func(_ context.Context, pos []string, stdout, _ io.Writer) error {
		if len(pos) > 0 {
			return fmt.Errorf("%w: config example takes no arguments, got %q", errUsage, pos)
		}
		if *asJSON {
			return writeJSON(stdout, struct {
				Path    string `json:"path"`
				Content string `json:"content"`
			}{"~/.config/fleetctl/config.yaml", exampleConfig})
		}
		_, err := io.WriteString(stdout, exampleConfig)
		return err
	}
}

// configOut is `config check --json`: the options in effect.
type configOut struct {
	Brokers          []string `json:"brokers"`
	TopicPrefix      string   `json:"topic_prefix"`
	Username         string   `json:"username"`
	Password         string   `json:"password"` // "***" when set
	ConnectTimeout   string   `json:"connect_timeout"`
	KeepAlive        string   `json:"keep_alive"`
	ReconnectMin     string   `json:"reconnect_min"`
	ReconnectFastMax string   `json:"reconnect_fast_max"`
	ReconnectFastFor string   `json:"reconnect_fast_for"`
	ReconnectMax     string   `json:"reconnect_max"`
	TLS              tlsFiles `json:"tls"`
	// Sources says where each option came from, by its config path:
	// a flag ("--broker"), a variable ("FLEETCTL_BROKER"), "config mqtt.broker" or "default".
	Sources map[string]string `json:"sources"`
}

func defineConfigCheck(fs *flag.FlagSet) runFunc {
	mc := addMQTTFlags(fs)
	asJSON := fs.Bool("json", false, "print the options as JSON")
	return func(_ context.Context, pos []string, stdout, stderr io.Writer) error {
		if len(pos) > 0 {
			return fmt.Errorf("%w: config check takes no arguments, got %q", errUsage, pos)
		}
		if err := mc.load(stderr); err != nil {
			return err
		}
		out := configOut{TopicPrefix: mc.Topics.Prefix(), Username: mc.Username, TLS: mc.TLS, Sources: mc.Sources,
			ConnectTimeout: mc.ConnectTimeout.String(), KeepAlive: mc.KeepAlive.String(),
			ReconnectMin: mc.Reconnect.Min.String(), ReconnectFastMax: mc.Reconnect.FastMax.String(),
			ReconnectFastFor: mc.Reconnect.FastFor.String(), ReconnectMax: mc.Reconnect.Max.String()}
		for _, b := range mc.Brokers {
			out.Brokers = append(out.Brokers, redact(b))
		}
		if mc.Password != "" {
			out.Password = "***"
		}
		if *asJSON {
			return writeJSON(stdout, out)
		}
		t := mc.TLS
		rows := [][2]string{
			{"topic_prefix", out.TopicPrefix}, {"mqtt.broker", strings.Join(out.Brokers, ",")},
			{"mqtt.username", out.Username}, {"mqtt.password", out.Password},
			{"mqtt.connect_timeout", out.ConnectTimeout}, {"mqtt.keep_alive", out.KeepAlive}, {"mqtt.reconnect_min", out.ReconnectMin},
			{"mqtt.reconnect_fast_max", out.ReconnectFastMax}, {"mqtt.reconnect_fast_for", out.ReconnectFastFor}, {"mqtt.reconnect_max", out.ReconnectMax},
			{"mqtt.tls.ca_file", t.CAFile}, {"mqtt.tls.cert_file", t.CertFile}, {"mqtt.tls.key_file", t.KeyFile},
			{"mqtt.tls.server_name", t.ServerName}, {"mqtt.tls.insecure_skip_verify", strconv.FormatBool(t.InsecureSkipVerify)},
		}
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "OPTION\tVALUE\tFROM")
		for _, r := range rows {
			fmt.Fprintln(tw, r[0]+"\t"+clean(orDash(r[1]))+"\t"+mc.Sources[r[0]])
		}
		return tw.Flush()
	}
}
