use super::*;

/// Feeds a scripted session (keys, then what the terminal showed) and collects commands.
/// With `rest`, the terminal rests before every step (an idle session between keys).
fn commands(steps: &[(&str, &str)], rest: bool) -> Vec<String> {
    let mut t = CommandTracker::new(40, 10).unwrap();
    let mut found = t.output("root@db:~# ");
    for (i, (keys, shown)) in steps.iter().enumerate() {
        if rest {
            t.rest();
            assert!(!t.is_awake());
        }
        t.input(i as f64 * 0.1, keys.as_bytes());
        if rest {
            t.rest();
        }
        found.extend(t.output(shown));
    }
    found
}

#[test]
fn the_command_is_the_line_as_the_terminal_showed_it() {
    type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, Vec<&'a str>);
    let cases: Vec<Case<'_>> = vec![
        (
            "plain",
            vec![("ls -la\r", "ls -la\r\ntotal 0\r\nroot@db:~# ")],
            vec!["ls -la"],
        ),
        (
            "one key at a time",
            vec![("l", "l"), ("s", "s"), ("\r", "\r\nfile\r\nroot@db:~# ")],
            vec!["ls"],
        ),
        (
            "backspace edits",
            vec![
                ("echo hellp", "echo hellp"),
                ("\x7f", "\x08 \x08"),
                ("o", "o"),
                ("\r", "\r\nhello\r\nroot@db:~# "),
            ],
            vec!["echo hello"],
        ),
        (
            "history recall (readline redraw)",
            vec![
                ("uptime\r", "uptime\r\n up 3 days\r\nroot@db:~# "),
                ("\x1b[A", "uptime"),
                ("\r", "\r\n up 3 days\r\nroot@db:~# "),
            ],
            vec!["uptime", "uptime"],
        ),
        (
            "cursor moved left, a word inserted",
            vec![
                ("cat /etc/hosts", "cat /etc/hosts"),
                (
                    "\x1b[D\x1b[D\x1b[D\x1b[D\x1b[D\x1b[D",
                    "\x08\x08\x08\x08\x08\x08",
                ),
                ("-n ", "-n /hosts\x08\x08\x08\x08\x08\x08"),
                ("\r", "\r\n1 localhost\r\nroot@db:~# "),
            ],
            vec!["cat /etc-n /hosts"],
        ),
        (
            "tab completion",
            vec![
                ("cat /etc/hostn", "cat /etc/hostn"),
                ("\t", "ame "),
                ("\r", "\r\ndb\r\n"),
            ],
            vec!["cat /etc/hostname"],
        ),
        (
            "a line longer than the terminal is joined",
            vec![(
                "echo 0123456789012345678901234567890123456789\r",
                "echo 0123456789012345678901234567890123456789\r\n0123456789012345678901234567890123456789\r\n",
            )],
            vec!["echo 0123456789012345678901234567890123456789"],
        ),
        (
            "a password prompt: nothing shown, nothing taken",
            vec![
                ("sudo -k id\r", "sudo -k id\r\n[sudo] password for root: "),
                ("hunter2\r", "\r\nuid=0(root)\r\nroot@db:~# "),
            ],
            vec!["sudo -k id"],
        ),
        ("masked password", vec![("pw\r", "**\r\n")], vec![]),
        (
            "Ctrl-C abandons the line",
            vec![
                ("rm -rf /tmp/x", "rm -rf /tmp/x"),
                ("\x03", "^C\r\nroot@db:~# "),
                ("id\r", "id\r\nuid=0\r\n"),
            ],
            vec!["id"],
        ),
        ("empty Enter", vec![("\r", "\r\nroot@db:~# ")], vec![]),
        (
            "a pasted script: every line",
            vec![(
                "echo one\recho two\r",
                "echo one\r\none\r\nroot@db:~# echo two\r\ntwo\r\nroot@db:~# ",
            )],
            vec!["echo one", "echo two"],
        ),
        (
            "lines pasted into a program reading its input are data, not commands",
            vec![
                ("cat > notes\r", "cat > notes\r\n"),
                ("one\ntwo\nthree\n", "one\r\ntwo\r\nthree\r\n"),
                ("\x04", "root@db:~# "),
                ("id\r", "id\r\nuid=0\r\n"),
            ],
            vec!["cat > notes", "one", "id"],
        ),
        (
            "a line longer than the terminal, and an escape sequence split between writes",
            vec![
                (
                    "echo aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
                    "echo aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
                ),
                ("\r", "\r\n\x1b[1"),
                ("", "mbold\x1b[0m\r\nroot@db:~# "),
                ("id\r", "id\r\nuid=0\r\nroot@db:~# "),
            ],
            vec!["echo aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "id"],
        ),
        (
            "nothing from a full-screen program",
            vec![
                ("vi x\r", "vi x\r\n\x1b[?1049h\x1b[H~\r\n~\r\n"),
                (":wq\r", "\x1b[10;1H:wq\r\n"),
                ("", "\x1b[?1049l"),
                ("pwd\r", "pwd\r\n/root\r\n"),
            ],
            vec!["vi x", "pwd"],
        ),
    ];
    for (name, steps, want) in cases {
        assert_eq!(commands(&steps, false), want, "{name}");
        assert_eq!(
            commands(&steps, true),
            want,
            "{name}, resting between steps"
        );
    }
}

#[test]
fn after_screens_of_output_the_command_is_still_found() {
    let mut t = CommandTracker::new(80, 24).unwrap();
    t.output("$ ");
    t.input(0.0, b"cat big\r");
    t.output("cat big\r\n");
    let block = "x".repeat(79) + "\r\n";
    for _ in 0..30_000 {
        assert!(t.output(&block).is_empty());
    }
    t.output("$ ");
    t.input(1.0, b"echo after\r");
    assert_eq!(t.output("echo after\r\nafter\r\n$ "), ["echo after"]);
}

#[test]
fn hostile_sizes_are_capped() {
    let t = CommandTracker::new(u32::MAX, 0).unwrap();
    assert_eq!(t.size(), (MAX_SIZE, 24));
}

#[test]
fn script_lines_from_a_shell_reading_its_input() {
    let mut s = ScriptLines::default();
    let mut got = s.input(b"set -e\n# comment\n\ncd /srv && ls\nsystemctl rest");
    got.extend(s.input(b"art app\n\xff\xfe binary\nlast"));
    got.extend(s.finish());
    assert_eq!(
        got,
        ["set -e", "cd /srv && ls", "systemctl restart app", "last"]
    );
    let long = vec![b'a'; MAX_COMMAND * 3];
    let mut s = ScriptLines::default();
    assert!(s.input(&long).is_empty());
    assert_eq!(s.input(b"\n")[0].len(), MAX_COMMAND);
    for (cmd, shell) in [
        ("bash", true),
        ("bash -s", true),
        ("/bin/sh", true),
        ("bash -lc 'id'", false),
        ("sh -c id", false),
        ("cat", false),
        ("", false),
        ("bash --login", true),
    ] {
        assert_eq!(is_shell_reading_input(cmd), shell, "{cmd}");
    }
}
