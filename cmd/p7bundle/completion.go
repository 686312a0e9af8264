package main

import (
	"fmt"

	"github.com/urfave/cli/v2"
)

// The scripts ask p7bundle itself (urfave/cli's --generate-bash-completion)
// for the commands and flags that fit, so they never go stale.
var completionScripts = map[string]string{
	"bash": `# bash completion for p7bundle: source it, or put it in /etc/bash_completion.d/p7bundle
_p7bundle_complete() {
	local cur opts
	COMPREPLY=()
	cur="${COMP_WORDS[COMP_CWORD]}"
	if [[ "$cur" == -* ]]; then
		opts=$("${COMP_WORDS[@]:0:$COMP_CWORD}" "$cur" --generate-bash-completion 2>/dev/null)
	else
		opts=$("${COMP_WORDS[@]:0:$COMP_CWORD}" --generate-bash-completion 2>/dev/null)
	fi
	COMPREPLY=($(compgen -W "$opts" -- "$cur"))
	return 0
}
complete -o bashdefault -o default -F _p7bundle_complete p7bundle
`,
	"zsh": `#compdef p7bundle
# zsh completion for p7bundle: put it in a directory of $fpath as _p7bundle
_p7bundle() {
	local -a opts
	local cur=${words[-1]}
	if [[ "$cur" == -* ]]; then
		opts=("${(@f)$(${words[@]:0:#words[@]-1} "$cur" --generate-bash-completion 2>/dev/null)}")
	else
		opts=("${(@f)$(${words[@]:0:#words[@]-1} --generate-bash-completion 2>/dev/null)}")
	fi
	if [[ "${opts[1]}" != "" ]]; then
		_describe 'values' opts
	else
		_files
	fi
}
compdef _p7bundle p7bundle
`,
	"powershell": `# PowerShell completion for p7bundle: add it to your $PROFILE
Register-ArgumentCompleter -Native -CommandName p7bundle -ScriptBlock {
	param($wordToComplete, $commandAst, $cursorPosition)
	$words = $commandAst.ToString()
	if ($wordToComplete -ne '') { $words = $words.Substring(0, $words.Length - $wordToComplete.Length) }
	$line = if ($wordToComplete -like '-*') { "$words $wordToComplete --generate-bash-completion" } else { "$words --generate-bash-completion" }
	Invoke-Expression $line 2>$null | Where-Object { $_ -like "$wordToComplete*" } | ForEach-Object {
		[System.Management.Automation.CompletionResult]::new($_, $_, 'ParameterValue', $_)
	}
}
`,
}

func completionCommand(env *environment) *cli.Command {
	return &cli.Command{
		Name:      "completion",
		Usage:     "print the shell completion script for bash, zsh, fish or powershell",
		ArgsUsage: "bash|zsh|fish|powershell",
		Description: "bash:       source <(p7bundle completion bash)\n" +
			"zsh:        p7bundle completion zsh > \"${fpath[1]}/_p7bundle\"\n" +
			"fish:       p7bundle completion fish > ~/.config/fish/completions/p7bundle.fish\n" +
			"powershell: p7bundle completion powershell | Out-String | Invoke-Expression",
		Action: func(c *cli.Context) error {
			if c.NArg() != 1 {
				return usagef("completion needs one of bash, zsh, fish, powershell")
			}
			shell := c.Args().First()
			if shell == "fish" {
				script, err := c.App.ToFishCompletion()
				if err != nil {
					return err
				}
				_, err = fmt.Fprint(env.stdout, script)
				return err
			}
			script, ok := completionScripts[shell]
			if !ok {
				return usagef("completion: no script for %q (bash, zsh, fish, powershell)", shell)
			}
			_, err := fmt.Fprint(env.stdout, script)
			return err
		},
	}
}
