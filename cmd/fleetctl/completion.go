package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"sort"
	"strings"

	"github.com/robotfleet/fleetlink/protocol"
)

func init() {
	register(&command{
		name:    "completion",
		args:    "bash|zsh|fish",
		summary: "print a shell completion script",
		help: "Prints a completion script for commands, subcommands, flags, file flags and\n" +
			"event types, generated from this binary's own commands:\n\n" +
			"  bash: source <(fleetctl completion bash)    # or save it in /etc/bash_completion.d/fleetctl\n" +
			"  zsh:  fleetctl completion zsh > \"${fpath[1]}/_fleetctl\"\n" +
			"  fish: fleetctl completion fish > ~/.config/fish/completions/fleetctl.fish\n\n" +
			"With --json prints the model the scripts are made from: {\"commands\": [{\"name\",\n" +
			"\"summary\", \"flags\": [{\"name\", \"usage\", \"takes_value\", \"file\"}], \"robot_arg\"}]}.\n\n" +
			"Robot ids are completed by running `fleetctl robots --ids` with the broker\n" +
			"options on the line (or from FLEETCTL_* and the config file), 2 s at most.",
		define: defineCompletion,
	})
}

// complFlag is one flag of a command, for completion.
type complFlag struct {
	Name       string `json:"name"`
	Usage      string `json:"usage"`
	TakesValue bool   `json:"takes_value"`
	File       bool   `json:"file"` // its value is a file name
}

// complCommand is one command, for completion.
type complCommand struct {
	Name    string      `json:"name"`
	Summary string      `json:"summary"`
	Flags   []complFlag `json:"flags"`
	// RobotArg: the first argument is a robot id, completed from
	// `fleetctl robots --ids` (the broker options on the line apply).
	RobotArg bool `json:"robot_arg"`
}

// complModel is everything the scripts complete.
type complModel struct {
	Commands []complCommand `json:"commands"`
}

// connFlags are the broker options (those with a value) a completion passes
// on to `robots --ids`.
var connFlags = func() []string {
	fs := flag.NewFlagSet("", flag.ContinueOnError)
	addMQTTFlags(fs)
	var names []string
	fs.VisitAll(func(f *flag.Flag) {
		if bf, ok := f.Value.(interface{ IsBoolFlag() bool }); !ok || !bf.IsBoolFlag() {
			names = append(names, "--"+f.Name)
		}
	})
	return names
}()

// robotIDsCmd is what a completion runs for robot ids, after the program
// name and the broker options from the line.
const robotIDsCmd = "robots --ids --wait 2s --quiet 300ms"

// fileFlags take a file name.
var fileFlags = map[string]bool{"config": true, "tls-ca-file": true, "tls-cert-file": true, "tls-key-file": true}

// shells maps a shell to its script generator.
var shells = map[string]func(io.Writer, complModel){"bash": bashCompletion, "zsh": zshCompletion, "fish": fishCompletion}

func defineCompletion(fs *flag.FlagSet) runFunc {
	asJSON := fs.Bool("json", false, "print the completion model as JSON instead of a script")
	return func(_ context.Context, pos []string, stdout, _ io.Writer) error {
		m := completionModel()
		if *asJSON && len(pos) == 0 {
			return writeJSON(stdout, m)
		}
		if len(pos) != 1 || shells[pos[0]] == nil {
			return fmt.Errorf("%w: want one shell: bash, zsh or fish, got %q", errUsage, pos)
		}
		if *asJSON {
			return writeJSON(stdout, m)
		}
		shells[pos[0]](stdout, m)
		return nil
	}
}

// completionModel lists every command and its flags, learnt by defining
// them on a throwaway flag set.
func completionModel() complModel {
	var m complModel
	for _, n := range commandNames() {
		c := commands[n]
		fs := flag.NewFlagSet(n, flag.ContinueOnError)
		c.define(fs)
		cc := complCommand{Name: n, Summary: c.summary, RobotArg: strings.HasPrefix(strings.TrimPrefix(c.args, "["), "ROBOT")}
		fs.VisitAll(func(f *flag.Flag) {
			bf, isBool := f.Value.(interface{ IsBoolFlag() bool })
			cc.Flags = append(cc.Flags, complFlag{Name: f.Name, Usage: firstClause(f.Usage), TakesValue: !(isBool && bf.IsBoolFlag()), File: fileFlags[f.Name]})
		})
		m.Commands = append(m.Commands, cc)
	}
	return m
}

// firstClause shortens a flag's usage for a completion menu.
func firstClause(s string) string {
	if i := strings.Index(s, " ("); i > 0 {
		s = s[:i]
	}
	return s
}

// words returns the top-level words (commands and the parents of
// subcommands) and each parent's subcommands.
func (m complModel) words() (top []string, subs map[string][]string) {
	seen := map[string]bool{"help": true, "version": true}
	top = []string{"help", "version"}
	subs = map[string][]string{}
	for _, c := range m.Commands {
		first, sub, isSub := strings.Cut(c.Name, " ")
		if isSub {
			subs[first] = append(subs[first], sub)
		}
		if !seen[first] {
			seen[first] = true
			top = append(top, first)
		}
	}
	sort.Strings(top)
	return top, subs
}

// positional are the values completed for a command's arguments.
func positional(name string) []string {
	switch name {
	case "completion":
		return []string{"bash", "fish", "zsh"}
	case "schema":
		return protocol.Types()
	}
	return nil
}

func flagNames(c complCommand, only func(complFlag) bool) string {
	var names []string
	for _, f := range c.Flags {
		if only == nil || only(f) {
			names = append(names, "--"+f.Name)
		}
	}
	return strings.Join(names, " ")
}

func bashCompletion(w io.Writer, m complModel) {
	top, subs := m.words()
	var b strings.Builder
	b.WriteString("# bash completion for fleetctl, generated by `fleetctl completion bash`.\n")
	b.WriteString("_fleetctl() {\n")
	b.WriteString("    local cur=\"${COMP_WORDS[COMP_CWORD]}\" prev=\"${COMP_WORDS[COMP_CWORD-1]}\"\n")
	b.WriteString("    local cmd=\"${COMP_WORDS[1]}\"\n")
	b.WriteString("    COMPREPLY=()\n")
	fmt.Fprintf(&b, "    if [[ $COMP_CWORD -eq 1 ]]; then\n        COMPREPLY=($(compgen -W %q -- \"$cur\"))\n        return\n    fi\n", strings.Join(top, " "))
	b.WriteString("    case \"$cmd\" in\n")
	for _, parent := range sortedKeys(subs) {
		fmt.Fprintf(&b, "    %s)\n        if [[ $COMP_CWORD -eq 2 ]]; then\n            COMPREPLY=($(compgen -W %q -- \"$cur\"))\n            return\n        fi\n        cmd=\"%s ${COMP_WORDS[2]}\" ;;\n",
			parent, strings.Join(subs[parent], " "), parent)
	}
	b.WriteString("    esac\n")
	b.WriteString("    local flags=\"\" valued=\"\" files=\"\" args=\"\" robotarg=0\n")
	b.WriteString("    case \"$cmd\" in\n")
	for _, c := range m.Commands {
		fmt.Fprintf(&b, "    %q)\n        flags=%q\n        valued=%q\n        files=%q\n        args=%q\n        robotarg=%d ;;\n", c.Name,
			flagNames(c, nil), flagNames(c, func(f complFlag) bool { return f.TakesValue }),
			flagNames(c, func(f complFlag) bool { return f.File }), strings.Join(positional(c.Name), " "), boolInt(c.RobotArg))
	}
	b.WriteString("    esac\n")
	b.WriteString("    if [[ \" $files \" == *\" $prev \"* ]]; then\n        COMPREPLY=($(compgen -f -- \"$cur\"))\n        return\n    fi\n")
	b.WriteString("    if [[ \" $valued \" == *\" $prev \"* ]]; then\n        return\n    fi\n")
	// Count the arguments before the word being completed (flag values are
	// not arguments) and keep the broker options to pass on.
	fmt.Fprintf(&b, "    local conn=%q i w n=0 first=2\n    local -a opts=()\n", strings.Join(connFlags, " "))
	b.WriteString("    [[ $cmd == *\" \"* ]] && first=3\n")
	b.WriteString("    for ((i = first; i < COMP_CWORD; i++)); do\n        w=${COMP_WORDS[i]}\n")
	b.WriteString("        if [[ $w == -*=* ]]; then\n            [[ \" $conn \" == *\" ${w%%=*} \"* ]] && opts+=(\"$w\")\n")
	b.WriteString("        elif [[ $w == -* ]]; then\n            if [[ \" $valued \" == *\" $w \"* ]]; then\n                [[ \" $conn \" == *\" $w \"* ]] && opts+=(\"$w\" \"${COMP_WORDS[i+1]}\")\n                ((i++))\n            fi\n")
	b.WriteString("        else\n            ((n++))\n        fi\n    done\n")
	fmt.Fprintf(&b, "    if [[ $cur != -* && $robotarg == 1 && $n -eq 0 ]]; then\n        COMPREPLY=($(compgen -W \"$(\"${COMP_WORDS[0]}\" %s \"${opts[@]}\" 2>/dev/null)\" -- \"$cur\"))\n        return\n    fi\n", robotIDsCmd)
	b.WriteString("    if [[ $cur == -* ]]; then\n        COMPREPLY=($(compgen -W \"$flags\" -- \"$cur\"))\n    else\n        COMPREPLY=($(compgen -W \"$args\" -- \"$cur\"))\n    fi\n")
	b.WriteString("}\ncomplete -F _fleetctl fleetctl\n")
	io.WriteString(w, b.String())
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// zshQuote quotes s in single quotes for zsh.
func zshQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

// zshItem is one "value:description" entry for _describe.
func zshItem(value, desc string) string {
	return zshQuote(strings.ReplaceAll(value, ":", `\:`) + ":" + strings.ReplaceAll(desc, ":", `\:`))
}

func zshCompletion(w io.Writer, m complModel) {
	top, subs := m.words()
	summary := map[string]string{"help": "show the commands", "version": "print the version"}
	for _, c := range m.Commands {
		summary[c.Name] = c.Summary
	}
	var b strings.Builder
	b.WriteString("#compdef fleetctl\n# zsh completion for fleetctl, generated by `fleetctl completion zsh`.\n")
	b.WriteString("_fleetctl() {\n    local -a items\n    local cmd=${words[2]} cur=${words[CURRENT]} prev=${words[CURRENT-1]}\n")
	b.WriteString("    if (( CURRENT == 2 )); then\n        items=(")
	for _, t := range top {
		d := summary[t]
		if d == "" {
			d = strings.Join(subs[t], ", ")
		}
		b.WriteString(" " + zshItem(t, d))
	}
	b.WriteString(" )\n        _describe 'command' items\n        return\n    fi\n")
	b.WriteString("    case $cmd in\n")
	for _, parent := range sortedKeys(subs) {
		fmt.Fprintf(&b, "    %s)\n        if (( CURRENT == 3 )); then\n            items=(", parent)
		for _, s := range subs[parent] {
			b.WriteString(" " + zshItem(s, summary[parent+" "+s]))
		}
		fmt.Fprintf(&b, " )\n            _describe 'subcommand' items\n            return\n        fi\n        cmd=\"%s ${words[3]}\" ;;\n", parent)
	}
	b.WriteString("    esac\n    local -a files valued args\n    local robotarg=0\n    items=()\n    case $cmd in\n")
	for _, c := range m.Commands {
		fmt.Fprintf(&b, "    %s)\n        items=(", zshQuote(c.Name))
		for _, f := range c.Flags {
			b.WriteString(" " + zshItem("--"+f.Name, f.Usage))
		}
		fmt.Fprintf(&b, " )\n        files=(%s)\n        valued=(%s)\n        args=(%s)\n        robotarg=%d ;;\n",
			flagNames(c, func(f complFlag) bool { return f.File }), flagNames(c, func(f complFlag) bool { return f.TakesValue }),
			strings.Join(positional(c.Name), " "), boolInt(c.RobotArg))
	}
	b.WriteString("    esac\n")
	b.WriteString("    if (( ${files[(Ie)$prev]} )); then\n        _files\n        return\n    fi\n")
	b.WriteString("    if (( ${valued[(Ie)$prev]} )); then\n        return\n    fi\n")
	fmt.Fprintf(&b, "    local -a conn opts\n    conn=(%s)\n    local i w n=0 first=3\n", strings.Join(connFlags, " "))
	b.WriteString("    [[ $cmd == *\" \"* ]] && first=4\n")
	b.WriteString("    for (( i = first; i < CURRENT; i++ )); do\n        w=${words[i]}\n")
	b.WriteString("        if [[ $w == -*=* ]]; then\n            (( ${conn[(Ie)${w%%=*}]} )) && opts+=(\"$w\")\n")
	b.WriteString("        elif [[ $w == -* ]]; then\n            if (( ${valued[(Ie)$w]} )); then\n                (( ${conn[(Ie)$w]} )) && opts+=(\"$w\" \"${words[i+1]}\")\n                (( i++ ))\n            fi\n")
	b.WriteString("        else\n            (( n++ ))\n        fi\n    done\n")
	fmt.Fprintf(&b, "    if [[ $cur != -* && $robotarg == 1 && $n -eq 0 ]]; then\n        local -a robots\n        robots=(${(f)\"$(${words[1]} %s \"${opts[@]}\" 2>/dev/null)\"})\n        compadd -a robots\n        return\n    fi\n", robotIDsCmd)
	b.WriteString("    if [[ $cur == -* ]]; then\n        _describe 'flag' items\n    elif (( ${#args} )); then\n        compadd -a args\n    fi\n")
	b.WriteString("}\n\nif [[ $zsh_eval_context[-1] == loadautoload ]]; then\n    _fleetctl \"$@\"\nelse\n    compdef _fleetctl fleetctl\nfi\n")
	io.WriteString(w, b.String())
}

// fishQuote quotes s in single quotes for fish.
func fishQuote(s string) string {
	return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(s) + "'"
}

func fishCompletion(w io.Writer, m complModel) {
	top, subs := m.words()
	var b strings.Builder
	b.WriteString("# fish completion for fleetctl, generated by `fleetctl completion fish`.\n")
	b.WriteString("complete -c fleetctl -f\n")
	// Robot ids for the first argument: fleetctl robots --ids with the
	// broker options already on the line.
	fmt.Fprintf(&b, "function __fleetctl_robots\n    set -l conn %s\n    set -l words (commandline -opc)\n    set -l opts\n", strings.Join(connFlags, " "))
	b.WriteString("    for i in (seq 2 (count $words))\n        set -l w $words[$i]\n")
	b.WriteString("        if string match -q -- '-*=*' $w; and contains -- (string split -m1 = -- $w)[1] $conn\n            set -a opts $w\n")
	b.WriteString("        else if contains -- $w $conn; and test $i -lt (count $words)\n            set -a opts $w $words[(math $i + 1)]\n        end\n    end\n")
	fmt.Fprintf(&b, "    $words[1] %s $opts 2>/dev/null\nend\n", robotIDsCmd)
	summary := map[string]string{"help": "show the commands", "version": "print the version"}
	for _, c := range m.Commands {
		summary[c.Name] = c.Summary
	}
	for _, t := range top {
		d := summary[t]
		if d == "" {
			d = strings.Join(subs[t], ", ")
		}
		fmt.Fprintf(&b, "complete -c fleetctl -n __fish_use_subcommand -a %s -d %s\n", fishQuote(t), fishQuote(d))
	}
	for _, parent := range sortedKeys(subs) {
		cond := fmt.Sprintf("__fish_seen_subcommand_from %s; and not __fish_seen_subcommand_from %s", parent, strings.Join(subs[parent], " "))
		for _, s := range subs[parent] {
			fmt.Fprintf(&b, "complete -c fleetctl -n %s -a %s -d %s\n", fishQuote(cond), fishQuote(s), fishQuote(summary[parent+" "+s]))
		}
	}
	for _, c := range m.Commands {
		first, sub, isSub := strings.Cut(c.Name, " ")
		cond := "__fish_seen_subcommand_from " + first
		if isSub {
			cond += "; and __fish_seen_subcommand_from " + sub
		}
		for _, f := range c.Flags {
			opt := ""
			switch {
			case f.File:
				opt = " -r -F"
			case f.TakesValue:
				opt = " -r"
			}
			fmt.Fprintf(&b, "complete -c fleetctl -n %s -l %s%s -d %s\n", fishQuote(cond), f.Name, opt, fishQuote(f.Usage))
		}
		if args := positional(c.Name); len(args) > 0 {
			fmt.Fprintf(&b, "complete -c fleetctl -n %s -a %s\n", fishQuote(cond), fishQuote(strings.Join(args, " ")))
		}
		if c.RobotArg {
			fmt.Fprintf(&b, "complete -c fleetctl -n %s -a '(__fleetctl_robots)'\n", fishQuote(cond))
		}
	}
	io.WriteString(w, b.String())
}
