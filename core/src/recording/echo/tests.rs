use super::*;

/// A step of a scripted session: keys typed or output shown.
enum S<'a> {
    In(&'a str),
    Out(&'a str),
    /// Time passes (seconds).
    Wait(f64),
}

/// Runs a script; the bytes kept, and the lengths redacted, in order.
fn run(script: &[S<'_>]) -> (String, Vec<usize>) {
    let mut j = EchoJudge::new();
    let mut now = 0.0;
    let mut verdicts = Vec::new();
    for s in script {
        now += 0.01;
        match s {
            S::In(t) => verdicts.extend(j.input(now, Bytes::copy_from_slice(t.as_bytes()))),
            S::Out(t) => verdicts.extend(j.output(now, t)),
            S::Wait(d) => now += d,
        }
    }
    verdicts.extend(j.finish());
    let mut kept = String::new();
    let mut redacted = Vec::new();
    for v in verdicts {
        match v {
            Verdict::Keep { data, .. } => kept.push_str(&String::from_utf8_lossy(&data)),
            Verdict::Redact { len, .. } => redacted.push(len),
        }
    }
    (kept, redacted)
}

use S::{In, Out, Wait};

#[test]
fn echoed_keys_are_kept_and_unechoed_ones_are_not() {
    let cases: Vec<(&str, Vec<S<'_>>, &str, Vec<usize>)> = vec![
        (
            "typed one key at a time at a shell",
            vec![
                In("l"),
                Out("l"),
                In("s"),
                Out("s"),
                In("\r"),
                Out("\r\nfile\r\n$ "),
            ],
            "ls\r",
            vec![],
        ),
        (
            "a whole line at once",
            vec![In("ls -la\r"), Out("ls -la\r\n"), Out("total 0\r\n")],
            "ls -la\r",
            vec![],
        ),
        (
            "backspace redraws between keys",
            vec![
                In("e"),
                Out("e"),
                In("x"),
                Out("x"),
                In("\x7f"),
                Out("\x08 \x08"),
                In("c"),
                Out("c"),
                In("\r"),
                Out("\r\n"),
            ],
            "ex\x7fc\r",
            vec![],
        ),
        (
            "backspace inside one scripted chunk",
            vec![In("ab\x7fc\r"), Out("ab\x08 \x08c\r\n")],
            "ab\x7fc\r",
            vec![],
        ),
        (
            "history recall redraws the line",
            vec![
                In("\x1b[A"),
                Out("\r$ echo hi\x1b[K"),
                In("\r"),
                Out("\r\nhi\r\n"),
            ],
            "\x1b[A\r",
            vec![],
        ),
        (
            "tab completion draws the rest",
            vec![In("ca"), Out("ca"), In("\t"), Out("t "), In("f"), Out("f")],
            "ca\tf",
            vec![],
        ),
        (
            "echo wrapped in colour codes",
            vec![In("x"), Out("\x1b[1mx\x1b[0m")],
            "x",
            vec![],
        ),
        (
            "sudo prompt: keys one by one, then a line feed",
            vec![
                Out("[sudo] password for root: "),
                In("h"),
                In("u"),
                In("n"),
                In("t"),
                In("e"),
                In("r"),
                In("2"),
                In("\r"),
                Out("\r\n"),
                Out("bin boot dev etc home lib\r\n"),
            ],
            "\r",
            vec![1, 1, 1, 1, 1, 1, 1],
        ),
        (
            "read -s: no newline at all, the program prints after Enter",
            vec![
                Out("pw: "),
                In("s"),
                In("e"),
                In("c"),
                In("\r"),
                Out("secret accepted\r\n"),
            ],
            "\r",
            vec![1, 1, 1],
        ),
        (
            "a pasted password and Enter, with echo off",
            vec![
                Out("Password: "),
                In("correct-horse-battery\r"),
                Out("\r\nwelcome\r\n"),
            ],
            "",
            vec![22],
        ),
        (
            "a pasted password, Enter apart",
            vec![
                Out("Password: "),
                In("correct-horse-battery"),
                In("\r"),
                Out("\r\ncorrect\r\n"),
            ],
            "\r",
            vec![21],
        ),
        (
            "nothing comes back within the wait",
            vec![In("q"), Wait(3.0), Out("q")],
            "",
            vec![1],
        ),
        (
            "a control key before a prompt does not open slack for what is typed after",
            vec![
                In("\x15"),
                Out("Password: "),
                In("p"),
                In("w"),
                In("\r"),
                Out("\r\npw ok\r\n"),
            ],
            "\x15\r",
            vec![1, 1],
        ),
        (
            "a multi-line paste echoed by the terminal line discipline",
            vec![In("one\ntwo\n"), Out("one\r\n"), Out("two\r\n")],
            "one\ntwo\n",
            vec![],
        ),
    ];
    for (name, script, kept, redacted) in cases {
        let got = run(&script);
        assert_eq!(got, (kept.to_string(), redacted), "{name}");
    }
}

#[test]
fn a_paste_travelling_ahead_of_its_echo_is_kept() {
    let mut j = EchoJudge::new();
    let line = "0123456789abcdef0123456789abcdef0123456789abcdef\n";
    let chunk: String = line.repeat(600);
    let mut kept = 0;
    for i in 0..10 {
        for v in j.input(i as f64 * 0.001, Bytes::from(chunk.clone())) {
            assert!(matches!(v, Verdict::Keep { .. }), "{v:?}");
            kept += 1;
        }
    }
    assert!(j.held_bytes() > 0);
    let echo = chunk.replace('\n', "\r\n");
    for i in 0..10 {
        for v in j.output(0.5 + i as f64 * 0.001, &echo) {
            assert!(matches!(v, Verdict::Keep { .. }), "{v:?}");
            kept += 1;
        }
    }
    assert_eq!(kept, 10);
    assert_eq!(j.held_bytes(), 0);
}

#[test]
fn the_hold_is_bounded() {
    let mut j = EchoJudge::new();
    let big = Bytes::from(vec![b'a'; 1024 * 1024]);
    let mut redacted = 0;
    for i in 0..12 {
        for v in j.input(f64::from(i) * 0.001, big.clone()) {
            if let Verdict::Redact { len, .. } = v {
                redacted += len;
            }
        }
        assert!(j.held_bytes() <= HOLD_MAX);
    }
    assert!(redacted >= 4 * 1024 * 1024, "{redacted}");
}
