use http::{HeaderMap, HeaderName, HeaderValue, Uri, Version};

use super::scan::Scanner;
use super::*;

type Headers<'a> = &'a [(&'a str, &'a str)];
type Verdict = Result<(), GuardError>;

fn headers(list: &[(&str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (k, v) in list {
        map.append(
            HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    map
}

#[test]
fn framing_table() {
    use GuardError::*;
    let h11 = Version::HTTP_11;
    let cases: &[(Version, Headers<'_>, Verdict)] = &[
        (h11, &[], Ok(())),
        (h11, &[("content-length", "5")], Ok(())),
        (h11, &[("transfer-encoding", "chunked")], Ok(())),
        (h11, &[("transfer-encoding", "Chunked")], Ok(())),
        (
            h11,
            &[("content-length", "5"), ("content-length", "5")],
            Err(DuplicateContentLength),
        ),
        (h11, &[("content-length", "5, 5")], Err(BadContentLength)),
        (h11, &[("content-length", "+5")], Err(BadContentLength)),
        (
            h11,
            &[("content-length", "5"), ("transfer-encoding", "chunked")],
            Err(ContentLengthWithTransferEncoding),
        ),
        (
            h11,
            &[
                ("transfer-encoding", "chunked"),
                ("transfer-encoding", "chunked"),
            ],
            Err(DuplicateTransferEncoding),
        ),
        (
            h11,
            &[("transfer-encoding", "gzip, chunked")],
            Err(UnsupportedTransferEncoding),
        ),
        (
            h11,
            &[("transfer-encoding", "chunked, identity")],
            Err(UnsupportedTransferEncoding),
        ),
        (
            h11,
            &[("transfer-encoding", "xchunked")],
            Err(UnsupportedTransferEncoding),
        ),
        (
            Version::HTTP_10,
            &[("transfer-encoding", "chunked")],
            Err(TransferEncodingOnHttp10),
        ),
        (
            Version::HTTP_2,
            &[("transfer-encoding", "chunked")],
            Err(TransferEncodingOnHttp2),
        ),
    ];
    for (version, list, want) in cases {
        assert_eq!(check_framing(*version, &headers(list)), *want, "{list:?}");
    }
}

#[test]
fn too_many_headers() {
    let mut map = HeaderMap::new();
    for i in 0..=MAX_HEADERS {
        map.insert(
            HeaderName::from_bytes(format!("x-h{i}").as_bytes()).unwrap(),
            HeaderValue::from_static("1"),
        );
    }
    assert_eq!(
        check_framing(Version::HTTP_2, &map),
        Err(GuardError::TooManyHeaders)
    );
}

#[test]
fn host_table() {
    use GuardError::*;
    let cases: &[(&str, Headers<'_>, Result<&str, GuardError>)] = &[
        ("/", &[("host", "App.Example.com")], Ok("app.example.com")),
        (
            "/",
            &[("host", "app.example.com:8443")],
            Ok("app.example.com"),
        ),
        ("/", &[("host", "[::1]:8443")], Ok("[::1]")),
        ("/", &[("host", "127.0.0.1")], Ok("127.0.0.1")),
        ("/", &[], Err(MissingHost)),
        (
            "/",
            &[("host", "a.com"), ("host", "b.com")],
            Err(DuplicateHost),
        ),
        ("/", &[("host", "user@a.com")], Err(BadHost)),
        ("/", &[("host", "a.com:x")], Err(BadHost)),
        ("/", &[("host", "a.com:99999999")], Err(BadHost)),
        ("/", &[("host", "")], Err(BadHost)),
        ("/", &[("host", "a b")], Err(BadHost)),
        ("http://a.com/x", &[("host", "a.com")], Ok("a.com")),
        ("http://A.com/x", &[("host", "a.COM")], Ok("a.com")),
        (
            "http://b.com/x",
            &[("host", "a.com")],
            Err(AuthorityMismatch),
        ),
        (
            "http://a.com:81/x",
            &[("host", "a.com")],
            Err(AuthorityMismatch),
        ),
        ("https://a.com/x", &[], Ok("a.com")),
    ];
    for (uri, list, want) in cases {
        let uri: Uri = uri.parse().unwrap();
        let map = headers(list);
        let got = host(&uri, &map).map(|h| h.name.into_owned());
        assert_eq!(got, want.map(str::to_string), "{uri} {list:?}");
    }
}

fn scan(input: &[u8], chunk: usize) -> (Verdicts, Scanner) {
    let verdicts = Verdicts::default();
    let mut scanner = Scanner::default();
    for part in input.chunks(chunk) {
        scanner.feed(part, &verdicts);
    }
    (verdicts, scanner)
}

/// Returns the verdict for each of `n` requests.
fn verdicts_for(input: &[u8], n: usize) -> Vec<Result<(), GuardError>> {
    let mut all = Vec::new();
    for chunk in [1, 3, 7, input.len().max(1)] {
        let (v, _) = scan(input, chunk);
        let got: Vec<_> = (0..n).map(|_| v.next_request()).collect();
        if let Some(prev) = all.last() {
            assert_eq!(prev, &got, "chunking changed the verdict");
        }
        all.push(got);
    }
    all.pop().unwrap()
}

#[test]
fn scanner_table() {
    use GuardError::*;
    let cases: &[(&str, usize, &[Verdict])] = &[
        ("GET / HTTP/1.1\r\nHost: a\r\n\r\n", 1, &[Ok(())]),
        (
            "\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\nGET /2 HTTP/1.1\r\nHost: a\r\n\r\n",
            2,
            &[Ok(()), Ok(())],
        ),
        (
            "POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\nhelloGET / HTTP/1.1\r\n\r\n",
            2,
            &[Ok(()), Ok(())],
        ),
        (
            "POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
            1,
            &[Err(DuplicateContentLength)],
        ),
        (
            "POST / HTTP/1.1\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            1,
            &[Err(ContentLengthWithTransferEncoding)],
        ),
        (
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\n",
            1,
            &[Err(ContentLengthWithTransferEncoding)],
        ),
        (
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
            1,
            &[Err(DuplicateTransferEncoding)],
        ),
        (
            "POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            1,
            &[Err(UnsupportedTransferEncoding)],
        ),
        (
            "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
            1,
            &[Err(TransferEncodingOnHttp10)],
        ),
        (
            "POST / HTTP/1.1\r\nContent-Length: 0x5\r\n\r\n",
            1,
            &[Err(BadContentLength)],
        ),
        // A smuggled second request inside a chunked body is body, not a request.
        (
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1e;ext=1\r\nGET /admin HTTP/1.1\r\nCL: 1\r\n\r\n\r\n0\r\nX-Trailer: 1\r\n\r\nGET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx",
            2,
            &[Ok(()), Err(DuplicateContentLength)],
        ),
        // A hostile head condemns every later request too.
        (
            "GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nxGET / HTTP/1.1\r\n\r\n",
            2,
            &[Err(DuplicateContentLength), Err(DuplicateContentLength)],
        ),
        // Bad chunk framing: the scanner cannot follow, later requests are refused.
        (
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nGET / HTTP/1.1\r\n\r\n",
            2,
            &[Ok(()), Err(FramingLost)],
        ),
    ];
    for (input, n, want) in cases {
        assert_eq!(
            verdicts_for(input.as_bytes(), *n),
            want.to_vec(),
            "{input:?}"
        );
    }
}

#[test]
fn scanner_stops_on_h2_preface_and_oversized_head() {
    let (_, s) = scan(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 5);
    assert!(s.is_off());
    let big = format!("GET / HTTP/1.1\r\nX: {}\r\n", "a".repeat(40 * 1024));
    let (v, s) = scan(big.as_bytes(), 4096);
    assert!(s.is_off());
    assert_eq!(v.next_request(), Err(GuardError::FramingLost));
}

/// Heads the byte-at-a-time rule counts in `input` (a head ends at LF LF or LF CR LF; CR
/// and LF before a request line are skipped), for inputs without bodies.
fn reference_heads(input: &[u8]) -> u64 {
    let (mut heads, mut in_head, mut lf, mut lf_cr) = (0, false, false, false);
    for &b in input {
        if !in_head {
            if b == b'\r' || b == b'\n' {
                continue;
            }
            in_head = true;
        }
        match b {
            b'\n' if lf || lf_cr => {
                heads += 1;
                in_head = false;
                (lf, lf_cr) = (false, false);
            }
            b'\n' => (lf, lf_cr) = (true, false),
            b'\r' if lf => (lf, lf_cr) = (false, true),
            _ => (lf, lf_cr) = (false, false),
        }
    }
    heads
}

#[test]
fn scanner_finds_head_ends_as_the_byte_rule_does_however_reads_split() {
    // Random CR/LF/letter streams fed in random pieces: the LF search with state carried
    // between reads must end exactly the heads the byte-at-a-time rule ends.
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for _ in 0..3000 {
        let len = (next() % 48) as usize;
        let input: Vec<u8> = (0..len)
            .map(|_| match next() % 4 {
                0 => b'\r',
                1 | 2 => b'\n',
                _ => b'a',
            })
            .collect();
        let verdicts = Verdicts::default();
        let mut scanner = Scanner::default();
        let mut rest = input.as_slice();
        while !rest.is_empty() {
            let n = (1 + next() % 6) as usize;
            let (part, tail) = rest.split_at(n.min(rest.len()));
            scanner.feed(part, &verdicts);
            rest = tail;
        }
        assert_eq!(
            scanner.heads_seen(),
            reference_heads(&input),
            "{:?}",
            String::from_utf8_lossy(&input)
        );
    }
}
