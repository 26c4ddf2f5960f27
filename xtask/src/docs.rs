//! Man pages and completions, built from each tool's `Cli::command()`.

use anyhow::Result;
use clap::CommandFactory;
use clap_complete::{generate, Shell};

struct Page {
    cmd: clap::Command,
    extra: &'static str,
}

fn pages() -> Vec<Page> {
    vec![
        Page {
            cmd: pm_start::Cli::command(),
            extra: "What \"up\" means: the process has not exited within \\-\\-grace and every \\-\\-ready check passed. \
With \\-\\-pidfile, a launcher that forks and exits 0 is followed to the PID its daemon writes into the file. \
The service runs in a session of its own, with stdin /dev/null, stdout and stderr appended to its log, and no inherited file descriptor above 2. \
PM_NAME is set to NAME in its environment; with \\-\\-ready notify also NOTIFY_SOCKET. \
Where a cgroup v2 hierarchy is writable (as root, or in a delegated subtree), the service gets a cgroup of its own: made, and its limits written, before the service is created in it (see CONTAINMENT in pm(7)). \
With \\-\\-restart on-failure or always, pm-start forks a monitor first, which runs the start, reports its outcome as this command's exit status, then stays as the service's parent: it records how the service ends (last_exit), restarts it after the restart delay and gives up after \\-\\-max-restarts (see SUPERVISION in pm(7)). \
With \\-\\-log-max-size or \\-\\-log-timestamps the output goes through a logger process of the start that rotates and stamps whole lines (see LOGS in pm(7)).",
        },
        Page {
            cmd: pm_stop::Cli::command(),
            extra: "pm-stop signals the service's whole process group (then SIGCONT), waits on pidfds until every process of the group is gone, and escalates to SIGKILL after the timeout. \
Descendants that left the group (setsid, double fork) are snapshotted before the signal and swept the same way once the leader is gone. \
A process whose start time no longer matches the record, or that started after its PID file was written, is never signalled, and neither are PID 1 and pm-stop itself. \
A service with a cgroup (pm-status -l shows the tracking) is stopped as a whole: the leader and its group first, then everything else in the cgroup; pm-stop waits until the kernel reports the cgroup empty, escalates with cgroup.kill and removes the cgroup. \
With \\-\\-forget, once nothing of the service runs its record, pm's PID file and its lock file are removed (the log stays), so pm-status no longer lists it; a NAME pm-stop finds unknown leaves no lock file behind either. \
A supervised service's monitor (pm-start \\-\\-restart) is stopped first, and pm-stop waits until it has exited, so nothing restarts what is being stopped. \
When both 1 and 4 apply, the exit status is 1.",
        },
        Page {
            cmd: pm_status::Cli::command(),
            extra: "The first NAME that is not running decides the exit status. pm-status is read-only: it never changes a record or a PID file and never waits for a lock. \
The JSON output is an array with one object per service; its fields are described in pm(7).",
        },
        Page {
            cmd: pm_stopall::Cli::command(),
            extra: "Services are taken newest start first (the reverse of the start order); with \\-\\-parallel N up to N stops run at once, still taken in that order. One line is printed per service as it finishes. \
Then whatever is left in the state directory's cgroups that no record names (a record removed while its service ran) is stopped too, with a line naming the cgroup.",
        },
        Page {
            cmd: pm_signal::Cli::command(),
            extra: "pm-signal sends the signal to what pm-status reports as the service's process (the launched process, or the daemon its PID file names), through a pidfd opened before the identity check, so never to a process that merely reuses a recorded PID. With \\-\\-group it reaches every process of the service: everything in its cgroup where the start has one (pm-status -l shows the tracking), else the members of that process's group. A service that is stopped or dead gets nothing and makes the exit status 1. To stop a service use pm-stop, which waits and escalates; pm-signal returns once the signal is sent.",
        },
        Page {
            cmd: pm_up::Cli::command(),
            extra: "The file is TOML: one table per service, [services.NAME], with command (a string, run by /bin/sh \\-c, or an array, run as it is) and optionally cwd (relative to the file), env, env_file, user, ready, ready_timeout, grace, pidfile, log, stop_signal, stop_timeout, restart, restart_delay, max_restarts, log_max_size, log_keep, log_timestamps, memory_max, cpu_max, pids_max, no_cgroup (as the pm\\-start options of the same names), tags, oneshot and needs (see STACKS in pm(7)). \
The whole file is checked before anything starts: an unknown key, a dependency that is not defined, or a cycle is reported with the file and line, and pm\\-up exits 2. \
Each service is started as pm\\-start starts it (its record, cgroup, readiness checks, monitor), once everything it needs is up; services that need nothing of each other start at the same time. \
A service that fails stops the start of what needs it (said on stderr, with its log tail); pm\\-up then exits 1. \
Interrupted (SIGINT, SIGTERM, SIGHUP), pm\\-up stops the half-done starts and what it had started (and is still started by it: not a service stopped and started again by hand meanwhile), each after everything that needs it, and dies of the signal. Its children run in process groups of their own, so a Ctrl\\-C typed at the terminal reaches pm\\-up alone, which passes it on in that order. A oneshot task dies with pm\\-up, even a pm\\-up killed by SIGKILL, and two pm\\-up runs never run one task at the same time. A pm\\-down of the same file is waited for (said on stderr); several pm\\-up runs of one file go on side by side.",
        },
        Page {
            cmd: pm_down::Cli::command(),
            extra: "The order comes from the records: each service started by pm\\-up recorded what it needed, so pm\\-down stops every service before the services it needs, whatever the file says by then. Services that do not need each other are stopped at the same time, each as pm\\-stop stops it. A pm\\-up of the same file still running (or the starts a SIGKILLed one left under way) is waited for first, and said so on stderr, so that nothing it starts after pm\\-down looked is left up.",
        },
        Page {
            cmd: pm_wait::Cli::command(),
            extra: "pm\\-wait looks at each service as pm\\-status does, then sleeps until something can have changed: a record written in the state directory (inotify) or a service process that ends (its pidfd). It uses no CPU while it waits. A name with no record counts as stopped, and for \\-\\-for ready is waited for (a start elsewhere may record it).",
        },
        Page {
            cmd: pm_restart::Cli::command(),
            extra: "The stop and the start are made under one hold of the name's lock: a pm\\-start (or pm\\-up) of the same name that comes meanwhile waits, then finds the new start. A supervised service's monitor is stopped first (outside the lock, which it needs to restart the service), and the start forks a new one. The restart runs what the record says: the command, options, working directory and environment of the last start with a command.",
        },
        Page {
            cmd: pm_logs::Cli::command(),
            extra: "Each line is printed whole, prefixed with its service's name (names padded to one width) and a bar. With \\-f, a log is followed by its open file: when pm's logger rotates LOG to LOG.1, what is left in the old file is printed first, then the new LOG from its start, so no line is lost or printed twice. Waiting is inotify on the logs' directories. A reader that closes the pipe (pm\\-logs | head) ends pm\\-logs quietly; SIGINT, SIGTERM and SIGHUP end a follow with status 0.",
        },
    ]
}

fn roff_escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('-', "\\-")
}

/// Renders one page: clap_mangen's sections, then EXAMPLES, EXIT STATUS, ENVIRONMENT,
/// SEE ALSO written here.
fn render(p: &Page) -> Result<String> {
    let cmd = p.cmd.clone();
    let name = cmd.get_name().to_string();
    let man = clap_mangen::Man::new(cmd.clone())
        .date("")
        .source("pm")
        .manual("pm manual");
    let mut buf: Vec<u8> = Vec::new();
    man.render_title(&mut buf)?;
    man.render_name_section(&mut buf)?;
    // clap's usage line (`pm-start [OPTIONS] <NAME> [-- <COMMAND>...]`), not clap_mangen's
    // list of every flag without its argument.
    let usage = cmd.clone().render_usage().to_string();
    let usage = usage
        .trim()
        .strip_prefix("Usage: ")
        .unwrap_or(usage.trim())
        .to_string();
    let rest = usage.strip_prefix(name.as_str()).unwrap_or(&usage).trim();
    let rest = rest.replace(['<', '>'], "");
    buf.extend_from_slice(
        format!(
            ".SH SYNOPSIS\n.B {}\n{}\n",
            roff_escape(&name),
            roff_escape(&rest)
        )
        .as_bytes(),
    );
    man.render_description_section(&mut buf)?;
    buf.extend_from_slice(format!(".PP\n{}\n", p.extra).as_bytes());
    man.render_options_section(&mut buf)?;
    if let Some(examples) = cmd.get_after_help() {
        let text = examples.to_string();
        let body = text.strip_prefix("Examples:\n").unwrap_or(&text);
        buf.extend_from_slice(b".SH EXAMPLES\n.nf\n");
        for line in body.lines() {
            buf.extend_from_slice(roff_escape(line).as_bytes());
            buf.push(b'\n');
        }
        buf.extend_from_slice(b".fi\n");
    }
    buf.extend_from_slice(b".SH \"EXIT STATUS\"\n");
    let rows = pm_core::exit::meanings(&name);
    for (c, d) in rows {
        buf.extend_from_slice(format!(".TP\n.B {c}\n{d}\n").as_bytes());
    }
    buf.extend_from_slice(
        b".SH ENVIRONMENT\n.TP\n.B PM_STATE_DIR\nState directory, unless \\-\\-state\\-dir is given. \
Otherwise $XDG_RUNTIME_DIR/pm, /run/pm for root, else ${TMPDIR:\\-/tmp}/pm\\-$UID.\n\
.TP\n.B PM_PIDFILE\nDefault PID-file template for names that have no record.\n\
.TP\n.B PM_CGROUP\nauto (default): a cgroup per start where one can be made; off: process-group tracking (as pm-start \\-\\-no\\-cgroup); on: a start fails when no cgroup can be made.\n",
    );
    let others: Vec<String> = [
        "pm-start",
        "pm-stop",
        "pm-status",
        "pm-stopall",
        "pm-signal",
        "pm-up",
        "pm-down",
        "pm-wait",
        "pm-restart",
        "pm-logs",
    ]
    .iter()
    .filter(|t| **t != name)
    .map(|t| format!(".BR {} (1),", roff_escape(t)))
    .collect();
    buf.extend_from_slice(
        format!(".SH \"SEE ALSO\"\n{}\n.BR pm (7)\n", others.join("\n")).as_bytes(),
    );
    man.render_version_section(&mut buf)?;
    Ok(String::from_utf8(buf)?)
}

/// `(file name, contents)` for every generated man page.
pub fn man_pages() -> Result<Vec<(String, String)>> {
    pages()
        .iter()
        .map(|p| Ok((format!("{}.1", p.cmd.get_name()), render(p)?)))
        .collect()
}

/// Recorded names offered when completing NAME (all tools share the helper).
const BASH_NAMES: &str = r#"
_pm_complete_names() {
    local cur prev
    cur="${COMP_WORDS[COMP_CWORD]}"
    prev="${COMP_WORDS[COMP_CWORD-1]}"
    case "$cur" in -*) return 1 ;; esac
    case "$prev" in
        --state-dir|--pidfile|--log|--cwd|--env|--user|--stop-signal|--stop-timeout|--grace|--ready|--ready-timeout|--signal|-s|--timeout|-t|--parallel|-j) return 1 ;;
    esac
    local w i sd=()
    for w in "${COMP_WORDS[@]:1:COMP_CWORD-1}"; do [ "$w" = "--" ] && return 1; done
    # A --state-dir already on the command line is where the names are.
    for ((i = 1; i < COMP_CWORD; i++)); do
        case "${COMP_WORDS[i]}" in
            --state-dir) sd=(--state-dir "${COMP_WORDS[i+1]}") ;;
            --state-dir=*) sd=("${COMP_WORDS[i]}") ;;
        esac
    done
    COMPREPLY=( $(compgen -W "$(pm-status "${sd[@]}" --complete-names 2>/dev/null)" -- "$cur") )
    return 0
}
"#;

/// Bash, zsh and fish completion scripts for every tool.
pub fn completions() -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    for p in pages() {
        let name = p.cmd.get_name().to_string();
        let takes_names = name != "pm-stopall" && name != "pm-up";
        for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
            let mut cmd = p.cmd.clone();
            let mut buf = Vec::new();
            generate(shell, &mut cmd, name.clone(), &mut buf);
            let mut text = String::from_utf8(buf)?;
            let file = match shell {
                Shell::Bash => {
                    if takes_names {
                        let f = format!("_{}", name.replace('-', "__"));
                        text.push_str(BASH_NAMES);
                        text.push_str(&format!(
                            "_{n}_with_names() {{ _pm_complete_names || {f} \"$@\"; }}\n\
                             complete -F _{n}_with_names -o bashdefault -o default {name}\n",
                            n = name.replace('-', "_"),
                        ));
                    }
                    format!("{name}.bash")
                }
                Shell::Zsh => {
                    if takes_names {
                        let f = format!("_{}_names", name.replace('-', "_"));
                        text = text
                            .lines()
                            .map(|l| {
                                if l.contains("::names --") || l.contains("':name --") {
                                    l.replace(":_default'", &format!(":{f}'"))
                                } else {
                                    l.to_string()
                                }
                            })
                            .collect::<Vec<_>>()
                            .join("\n");
                        // Defined before the generated body runs, so the first completion works.
                        let helper = format!(
                            "# Recorded names for NAME (in the --state-dir given, if any).\n{f}() {{ local -a names sd; local i=${{words[(I)--state-dir]}}; (( i )) && sd=(--state-dir ${{words[i+1]}}); names=(${{(f)\"$(pm-status $sd --complete-names 2>/dev/null)\"}}); _describe 'service' names }}\n"
                        );
                        text = match text.split_once('\n') {
                            Some((first, rest)) => format!("{first}\n{helper}{rest}\n"),
                            None => text,
                        };
                    }
                    format!("_{name}")
                }
                _ => {
                    if takes_names {
                        text.push_str(&format!(
                            "function __{u}_names; set -l w (commandline -opc); set -l sd; set -l i (contains -i -- --state-dir $w); and set sd --state-dir $w[(math $i + 1)]; pm-status $sd --complete-names 2>/dev/null; end\n\
                             complete -c {name} -n 'not string match -q -- \"-*\" (commandline -ct)' -f -a '(__{u}_names)'\n",
                            u = name.replace('-', "_")
                        ));
                    }
                    format!("{name}.fish")
                }
            };
            out.push((file, text));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn committed_man_pages_are_up_to_date() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../man");
        for (name, text) in man_pages().unwrap() {
            let committed = std::fs::read_to_string(dir.join(&name)).unwrap_or_default();
            assert!(
                committed == text,
                "man/{name} is out of date: run `make man` (cargo run -p xtask -- man man) and commit"
            );
        }
    }

    #[test]
    fn man_pages_carry_examples_and_exit_status() {
        for (name, text) in man_pages().unwrap() {
            assert!(text.contains(".SH EXAMPLES"), "{name}");
            assert!(text.contains(".SH \"EXIT STATUS\""), "{name}");
            assert!(text.contains("\\-\\-state\\-dir"), "{name}");
        }
    }

    #[test]
    fn completions_offer_recorded_names() {
        let c = completions().unwrap();
        assert_eq!(c.len(), 30);
        let bash = &c.iter().find(|(n, _)| n == "pm-stop.bash").unwrap().1;
        assert!(bash.contains("pm-status \"${sd[@]}\" --complete-names"));
        assert!(bash.contains("complete -F _pm_stop_with_names"));
        let fish = &c.iter().find(|(n, _)| n == "pm-status.fish").unwrap().1;
        assert!(fish.contains("--complete-names"));
        let zsh = &c.iter().find(|(n, _)| n == "_pm-stop").unwrap().1;
        assert!(
            zsh.starts_with("#compdef pm-stop\n# Recorded names"),
            "{zsh}"
        );
        assert!(zsh.contains(":_pm_stop_names'"), "{zsh}");
    }
}
