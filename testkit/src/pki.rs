//! A test CA and the gateway's server certificate, written as PEM files the gateway reads.
//! The server certificate can be re-issued (new serial and CN, same paths) for reload tests.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SerialNumber,
};
use rustls::ClientConfig;
use rustls::SupportedProtocolVersion;
use rustls_pki_types::CertificateDer;

/// Names the server certificate is valid for.
pub const SERVER_NAMES: &[&str] = &[
    "gatehouse.localhost",
    "*.gatehouse.localhost",
    "localhost",
    "127.0.0.1",
];

pub struct Pki {
    issuer: Issuer<'static, KeyPair>,
    ca_der: CertificateDer<'static>,
    pub ca_path: PathBuf,
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
    /// DER of the server certificate currently written to `cert_path`.
    pub server_der: CertificateDer<'static>,
}

impl Pki {
    /// Creates `dir/ca.crt`, `dir/gateway.crt`, `dir/gateway.key` (server cert serial 1).
    pub fn new(dir: &Path) -> Pki {
        std::fs::create_dir_all(dir).unwrap();
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "gatehouse test CA");
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let ca_path = dir.join("ca.crt");
        std::fs::write(&ca_path, ca_cert.pem()).unwrap();
        let mut pki = Pki {
            issuer: Issuer::new(ca_params, ca_key),
            ca_der: ca_cert.der().clone(),
            ca_path,
            cert_path: dir.join("gateway.crt"),
            key_path: dir.join("gateway.key"),
            server_der: CertificateDer::from(Vec::new()),
        };
        pki.issue_server("gatehouse test server 1", 1);
        pki
    }

    /// Issues a new server certificate and key and writes them over the same files (each via a
    /// temp file and rename, so a reader never sees half a file).
    pub fn issue_server(&mut self, common_name: &str, serial: u64) {
        self.issue_server_valid(common_name, serial, None);
    }

    /// [`Pki::issue_server`] with a validity period of `(from, to)` days relative to today
    /// (`None`: rcgen's default, 1975 to 4096).
    pub fn issue_server_valid(&mut self, common_name: &str, serial: u64, days: Option<(i64, i64)>) {
        let key = KeyPair::generate().unwrap();
        let names: Vec<String> = SERVER_NAMES.iter().map(|s| s.to_string()).collect();
        let mut params = CertificateParams::new(names).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.serial_number = Some(SerialNumber::from_slice(&serial.to_be_bytes()));
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        if let Some((from, to)) = days {
            let today = i64::try_from(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_secs()
                    / 86_400,
            )
            .unwrap();
            // Midnight UTC of a day counted from 1970-01-01, in rcgen's date type.
            let day = |n: i64| {
                let secs = u64::try_from(n * 86_400).expect("a day after 1970");
                rcgen::date_time_ymd(1970, 1, 1) + std::time::Duration::from_secs(secs)
            };
            params.not_before = day(today + from);
            params.not_after = day(today + to);
        }
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        write_atomic(&self.key_path, key.serialize_pem().as_bytes());
        write_atomic(&self.cert_path, cert.pem().as_bytes());
        self.server_der = cert.der().clone();
    }

    /// Like [`Pki::issue_server`], but the files keep their size and modification time, so a
    /// file-change watcher cannot notice: only an explicit reload (SIGHUP) can pick them up.
    pub fn issue_server_unnoticeably(&mut self, common_name: &str, serial: u64) {
        let meta = |p: &Path| {
            let m = std::fs::metadata(p).unwrap();
            (m.len(), m.modified().unwrap())
        };
        let (cert_len, cert_mtime) = meta(&self.cert_path);
        let (key_len, key_mtime) = meta(&self.key_path);
        // ECDSA signatures vary in length by a byte or two: re-issue until the PEM sizes match.
        for _ in 0..200 {
            self.issue_server(common_name, serial);
            if meta(&self.cert_path).0 == cert_len && meta(&self.key_path).0 == key_len {
                for (p, t) in [(&self.cert_path, cert_mtime), (&self.key_path, key_mtime)] {
                    std::fs::File::options()
                        .write(true)
                        .open(p)
                        .unwrap()
                        .set_modified(t)
                        .unwrap();
                }
                return;
            }
        }
        panic!("could not re-issue a certificate of the same size");
    }

    pub fn ca_der(&self) -> &CertificateDer<'static> {
        &self.ca_der
    }

    /// A client config trusting only the test CA, offering `alpn` (e.g. `[b"h2", b"http/1.1"]`)
    /// and the given TLS versions (`None`: 1.2 and 1.3).
    pub fn client_config(
        &self,
        alpn: &[&[u8]],
        versions: Option<&[&'static SupportedProtocolVersion]>,
    ) -> Arc<ClientConfig> {
        client_config_for(&self.ca_der, alpn, versions)
    }
}

/// A rustls client config trusting `ca` (aws-lc-rs provider, explicitly).
pub fn client_config_for(
    ca: &CertificateDer<'static>,
    alpn: &[&[u8]],
    versions: Option<&[&'static SupportedProtocolVersion]>,
) -> Arc<ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.clone()).unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = ClientConfig::builder_with_provider(provider);
    let builder = match versions {
        Some(v) => builder.with_protocol_versions(v).unwrap(),
        None => builder.with_safe_default_protocol_versions().unwrap(),
    };
    let mut cfg = builder.with_root_certificates(roots).with_no_client_auth();
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(cfg)
}

/// Reads the first certificate of a PEM file as DER.
pub fn read_pem_cert(path: &Path) -> CertificateDer<'static> {
    use rustls_pki_types::pem::PemObject;
    CertificateDer::from_pem_file(path)
        .unwrap_or_else(|e| panic!("reading a PEM certificate from {}: {e:?}", path.display()))
}

fn write_atomic(path: &Path, bytes: &[u8]) {
    let tmp = path.with_extension("tmp-write");
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}
