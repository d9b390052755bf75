use super::*;

fn pkt(kind: u8, id: u32, body: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&((body.len() + 5) as u32).to_be_bytes());
    v.push(kind);
    v.extend_from_slice(&id.to_be_bytes());
    v.extend_from_slice(body);
    v
}

fn s(b: &[u8]) -> Vec<u8> {
    let mut v = (b.len() as u32).to_be_bytes().to_vec();
    v.extend_from_slice(b);
    v
}

#[test]
fn tracks_an_upload_byte_by_byte() {
    let mut t = SftpTracker::new();
    let mut open = s(b"/tmp/f");
    open.extend_from_slice(&(FXF_WRITE | 0x08).to_be_bytes());
    open.extend_from_slice(&0u32.to_be_bytes());
    let mut write = s(b"H1");
    write.extend_from_slice(&0u64.to_be_bytes());
    write.extend_from_slice(&s(&[7u8; 10000]));
    let client: Vec<u8> = [
        pkt(FXP_OPEN, 1, &open),
        pkt(FXP_WRITE, 2, &write),
        pkt(FXP_CLOSE, 3, &s(b"H1")),
    ]
    .concat();
    let mut ops = Vec::new();
    // Response to the open arrives before the write.
    ops.extend(t.from_client(&client[..20]));
    let rest: Vec<u8> = client[20..].to_vec();
    let first_len = 4 + 5 + open.len();
    ops.extend(t.from_client(&rest[..first_len - 20]));
    ops.extend(t.from_server(&pkt(FXP_HANDLE, 1, &s(b"H1"))));
    for b in &rest[first_len - 20..] {
        ops.extend(t.from_client(std::slice::from_ref(b)));
    }
    assert_eq!(
        ops,
        vec![
            FileOp::Open {
                path: "/tmp/f".into(),
                read: false,
                write: true
            },
            FileOp::Close {
                path: "/tmp/f".into(),
                write: true,
                read_bytes: 0,
                written_bytes: 10000
            },
        ]
    );
}

#[test]
fn tracks_download_rename_remove_mkdir() {
    let mut t = SftpTracker::new();
    let mut open = s(b"/etc/x");
    open.extend_from_slice(&FXF_READ.to_be_bytes());
    open.extend_from_slice(&0u32.to_be_bytes());
    t.from_client(&pkt(FXP_OPEN, 1, &open));
    t.from_server(&pkt(FXP_HANDLE, 1, &s(b"h")));
    let mut read = s(b"h");
    read.extend_from_slice(&0u64.to_be_bytes());
    read.extend_from_slice(&4096u32.to_be_bytes());
    t.from_client(&pkt(FXP_READ, 2, &read));
    t.from_server(&pkt(FXP_DATA, 2, &s(&[1u8; 300])));
    let ops = t.from_client(&pkt(FXP_CLOSE, 3, &s(b"h")));
    assert_eq!(
        ops,
        vec![FileOp::Close {
            path: "/etc/x".into(),
            write: false,
            read_bytes: 300,
            written_bytes: 0
        }]
    );
    let ops = t.from_client(
        &[
            pkt(FXP_RENAME, 4, &[s(b"a"), s(b"b")].concat()),
            pkt(FXP_REMOVE, 5, &s(b"c")),
            pkt(
                FXP_MKDIR,
                6,
                &[s(b"d"), 0u32.to_be_bytes().to_vec()].concat(),
            ),
        ]
        .concat(),
    );
    let ext = t.from_client(&pkt(
        FXP_EXTENDED,
        7,
        &[s(b"posix-rename@openssh.com"), s(b"x"), s(b"y")].concat(),
    ));
    assert_eq!(
        ext,
        vec![FileOp::Rename {
            from: "x".into(),
            to: "y".into()
        }]
    );
    assert_eq!(
        ops,
        vec![
            FileOp::Rename {
                from: "a".into(),
                to: "b".into()
            },
            FileOp::Remove { path: "c".into() },
            FileOp::Mkdir { path: "d".into() }
        ]
    );
}

#[test]
fn hostile_bytes_never_panic() {
    let mut t = SftpTracker::new();
    assert_eq!(
        t.from_client(&[0xff, 0xff, 0xff, 0xff, 1, 2]),
        vec![FileOp::LostSync {
            direction: "client"
        }]
    );
    assert!(t.from_client(b"more").is_empty());
    let mut seed = 0x1234_5678_u32;
    for _ in 0..2000 {
        let mut t = SftpTracker::new();
        let mut buf = Vec::new();
        for _ in 0..64 {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            buf.push(seed as u8);
        }
        // Small declared lengths so packets complete.
        buf[0] = 0;
        buf[1] = 0;
        buf[2] = 0;
        t.from_client(&buf);
        t.from_server(&buf);
    }
    for kind in [
        FXP_OPEN, FXP_WRITE, FXP_READ, FXP_CLOSE, FXP_RENAME, FXP_HANDLE, FXP_DATA,
    ] {
        let mut t = SftpTracker::new();
        t.from_client(&pkt(kind, 1, &[0xff, 0xff, 0xff]));
        t.from_server(&pkt(kind, 1, &[0xff, 0xff]));
    }
}
