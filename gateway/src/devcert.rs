//! Development certificates for the quick-start: a local CA and a server certificate for the
//! loopback names, generated when missing; the server certificate is re-issued (by the same
//! CA) when it has expired or expires within the warning period, since the gateway refuses
//! to serve an expired one.
//!
//! Threat: a dev CA trusted in a browser could vouch for any site if its key leaked.
//! Mitigation: the CA is name-constrained to `localhost` and loopback addresses, keys are
//! written mode 0600, an existing CA is never overwritten.

use std::fs::OpenOptions;
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use rcgen::{
    BasicConstraints, CertificateParams, CidrSubnet, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, GeneralSubtree, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    NameConstraints, date_time_ymd,
};

use gatehouse_core::config::defaults::CERT_EXPIRY_WARNING;

use crate::error::DevCertError;

/// Names the server certificate covers.
pub const SERVER_NAMES: &[&str] = &[
    "localhost",
    "gatehouse.localhost",
    "*.gatehouse.localhost",
    "127.0.0.1",
    "::1",
];
const CA_COMMON_NAME: &str = "Gatehouse development CA (localhost only)";
/// Server certificates stay under the 398 days browsers accept.
const SERVER_VALID_DAYS: i64 = 397;
const CA_VALID_DAYS: i64 = 10 * 365;

/// Makes sure `cert_path`/`key_path` exist; creates `<dir>/ca.crt`, `<dir>/ca.key` and the
/// server pair when missing. The written chain is server certificate + CA certificate.
pub fn ensure(dir: &Path, cert_path: &Path, key_path: &Path) -> Result<(), DevCertError> {
    if cert_path.exists() && key_path.exists() && !needs_renewal(cert_path) {
        return Ok(());
    }
    create_dir(dir)?;
    for p in [cert_path, key_path] {
        if let Some(parent) = p.parent().filter(|p| !p.as_os_str().is_empty()) {
            create_dir(parent)?;
        }
    }
    let ca_cert_path = dir.join("ca.crt");
    let ca_key_path = dir.join("ca.key");
    let ca_params = ca_params();
    let (ca_key, ca_pem) = if ca_cert_path.exists() && ca_key_path.exists() {
        let key_pem = read(&ca_key_path)?;
        let key = KeyPair::from_pem(&key_pem).map_err(DevCertError::Generate)?;
        (key, read(&ca_cert_path)?)
    } else {
        let key = KeyPair::generate().map_err(DevCertError::Generate)?;
        let cert = ca_params
            .self_signed(&key)
            .map_err(DevCertError::Generate)?;
        write(&ca_key_path, key.serialize_pem().as_bytes(), 0o600)?;
        write(&ca_cert_path, cert.pem().as_bytes(), 0o644)?;
        (key, cert.pem())
    };
    // Our own CA: its subject and key identifiers are re-derived from the same parameters.
    let issuer = Issuer::new(ca_params, &ca_key);
    let server_key = KeyPair::generate().map_err(DevCertError::Generate)?;
    let server = server_params()?
        .signed_by(&server_key, &issuer)
        .map_err(DevCertError::Generate)?;
    let chain = format!("{}{}", server.pem(), ca_pem);
    remove_if_exists(key_path)?;
    remove_if_exists(cert_path)?;
    write(key_path, server_key.serialize_pem().as_bytes(), 0o600)?;
    write(cert_path, chain.as_bytes(), 0o644)?;
    tracing::info!(cert = %cert_path.display(), ca = %ca_cert_path.display(), "generated development certificates");
    Ok(())
}

/// True when the first certificate of `cert_path` is unreadable, outside its validity, or
/// within [`CERT_EXPIRY_WARNING`] of its end.
fn needs_renewal(cert_path: &Path) -> bool {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let Ok(der) = CertificateDer::from_pem_file(cert_path) else {
        return true;
    };
    let now = SystemTime::now();
    let soon = i64::try_from(CERT_EXPIRY_WARNING.as_secs()).unwrap_or(i64::MAX);
    crate::tls::Validity::of_der(&der)
        .is_none_or(|v| v.not_yet_valid(now) || v.remaining(now) < soon)
}

fn ca_params() -> CertificateParams {
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, CA_COMMON_NAME);
    dn.push(DnType::OrganizationName, "Gatehouse");
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    p.name_constraints = Some(NameConstraints {
        permitted_subtrees: vec![
            GeneralSubtree::DnsName("localhost".to_string()),
            GeneralSubtree::IpAddress(CidrSubnet::from_addr_prefix(
                IpAddr::V4(Ipv4Addr::new(127, 0, 0, 0)),
                8,
            )),
            GeneralSubtree::IpAddress(CidrSubnet::from_addr_prefix(
                IpAddr::V6(Ipv6Addr::LOCALHOST),
                128,
            )),
        ],
        excluded_subtrees: Vec::new(),
    });
    set_validity(&mut p, CA_VALID_DAYS);
    p
}

fn server_params() -> Result<CertificateParams, DevCertError> {
    let names: Vec<String> = SERVER_NAMES.iter().map(|s| (*s).to_string()).collect();
    let mut p = CertificateParams::new(names).map_err(DevCertError::Generate)?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "gatehouse.localhost");
    p.distinguished_name = dn;
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    p.use_authority_key_identifier_extension = true;
    set_validity(&mut p, SERVER_VALID_DAYS);
    Ok(p)
}

/// Valid from yesterday (clock skew) for `days`.
fn set_validity(p: &mut CertificateParams, days: i64) {
    let today = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() / 86_400);
    let today = i64::try_from(today).unwrap_or(0);
    let (y, m, d) = civil_from_days(today - 1);
    p.not_before = date_time_ymd(y, m, d);
    let (y, m, d) = civil_from_days(today - 1 + days);
    p.not_after = date_time_ymd(y, m, d);
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i32, u8, u8) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (
        i32::try_from(y).unwrap_or(1970),
        u8::try_from(m).unwrap_or(1),
        u8::try_from(d).unwrap_or(1),
    )
}

fn create_dir(dir: &Path) -> Result<(), DevCertError> {
    std::fs::create_dir_all(dir).map_err(|source| DevCertError::Write {
        path: dir.to_path_buf(),
        source,
    })
}

fn read(path: &Path) -> Result<String, DevCertError> {
    std::fs::read_to_string(path).map_err(|source| DevCertError::Read {
        path: path.to_path_buf(),
        source,
    })
}

fn remove_if_exists(path: &Path) -> Result<(), DevCertError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(DevCertError::Write {
            path: path.to_path_buf(),
            source,
        }),
    }
}

fn write(path: &Path, data: &[u8], mode: u32) -> Result<(), DevCertError> {
    let err = |source| DevCertError::Write {
        path: path.to_path_buf(),
        source,
    };
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(err)?;
    f.write_all(data).map_err(err)?;
    f.sync_all().map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_expired_server_certificate_is_reissued_by_the_same_ca() {
        let tmp = gatehouse_testkit::TestDir::new("devcert");
        let dir = tmp.join("certs");
        let (cert, key) = (dir.join("gateway.crt"), dir.join("gateway.key"));
        ensure(&dir, &cert, &key).unwrap();
        let first = std::fs::read(&cert).unwrap();
        let ca = std::fs::read(dir.join("ca.crt")).unwrap();
        ensure(&dir, &cert, &key).unwrap();
        assert_eq!(
            std::fs::read(&cert).unwrap(),
            first,
            "a valid certificate is kept"
        );
        assert!(!needs_renewal(&cert));
        // Replace it by an expired one.
        let mut p = CertificateParams::new(vec!["localhost".into()]).unwrap();
        p.not_before = date_time_ymd(2020, 1, 1);
        p.not_after = date_time_ymd(2021, 1, 1);
        let k = KeyPair::generate().unwrap();
        let old = p.self_signed(&k).unwrap();
        std::fs::write(&cert, old.pem()).unwrap();
        assert!(needs_renewal(&cert));
        ensure(&dir, &cert, &key).unwrap();
        assert!(!needs_renewal(&cert));
        assert_ne!(std::fs::read(&cert).unwrap(), old.pem().into_bytes());
        assert_eq!(
            std::fs::read(dir.join("ca.crt")).unwrap(),
            ca,
            "the CA is kept"
        );
    }

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_723), (2024, 1, 1));
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
    }
}
