//! Certificates and keys for a test cluster, made with the `openssl` CLI: a
//! CA, the API server's serving certificate, client certificates (the admin
//! in `system:masters`), and the service-account signing key.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Files written by [`generate`], all in one folder.
#[derive(Clone, Debug)]
pub struct Pki {
    pub dir: PathBuf,
    pub ca_cert: PathBuf,
    pub ca_key: PathBuf,
    pub serving_cert: PathBuf,
    pub serving_key: PathBuf,
    pub admin_cert: PathBuf,
    pub admin_key: PathBuf,
    /// Service-account token signing key (RSA) and its public half.
    pub sa_key: PathBuf,
    pub sa_pub: PathBuf,
}

/// A minimal OpenSSL config, so the system's openssl.cnf adds nothing.
const CONFIG: &str = "\
[req]
distinguished_name = dn
prompt = no
[dn]
CN = unused
[ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign, digitalSignature
subjectKeyIdentifier = hash
[server]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = @alt
[client]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = clientAuth
[alt]
IP.1 = 127.0.0.1
DNS.1 = localhost
DNS.2 = kubernetes
DNS.3 = kubernetes.default
DNS.4 = kubernetes.default.svc
DNS.5 = kubernetes.default.svc.cluster.local
";

/// Everything the cluster needs, in `dir` (created). `ips`: more addresses
/// for the serving certificate besides 127.0.0.1 (the `kubernetes`
/// Service's, the pod network's gateway).
pub fn generate(dir: &Path, ips: &[&str]) -> Result<Pki, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
    let cnf = dir.join("openssl.cnf");
    let mut config = CONFIG.to_string();
    for (i, ip) in ips.iter().enumerate() {
        config.push_str(&format!("IP.{} = {ip}\n", i + 2));
    }
    std::fs::write(&cnf, config).map_err(|e| format!("write {}: {e}", cnf.display()))?;
    let p = |f: &str| dir.join(f);
    let pki = Pki {
        dir: dir.to_path_buf(),
        ca_cert: p("ca.crt"),
        ca_key: p("ca.key"),
        serving_cert: p("apiserver.crt"),
        serving_key: p("apiserver.key"),
        admin_cert: p("admin.crt"),
        admin_key: p("admin.key"),
        sa_key: p("sa.key"),
        sa_pub: p("sa.pub"),
    };

    openssl(&[
        "req",
        "-x509",
        "-new",
        "-nodes",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-keyout",
        s(&pki.ca_key),
        "-out",
        s(&pki.ca_cert),
        "-days",
        "3650",
        "-subj",
        "/CN=rstore-test-ca",
        "-config",
        s(&cnf),
        "-extensions",
        "ca",
    ])?;
    sign(
        &pki,
        &cnf,
        "apiserver",
        "/CN=kube-apiserver",
        "server",
        &pki.serving_key,
        &pki.serving_cert,
    )?;
    sign(
        &pki,
        &cnf,
        "admin",
        "/O=system:masters/CN=rstore-test-admin",
        "client",
        &pki.admin_key,
        &pki.admin_cert,
    )?;
    openssl(&["genrsa", "-out", s(&pki.sa_key), "2048"])?;
    openssl(&[
        "rsa",
        "-in",
        s(&pki.sa_key),
        "-pubout",
        "-out",
        s(&pki.sa_pub),
    ])?;
    Ok(pki)
}

/// A client certificate signed by the cluster CA for `subject`
/// (`/O=group/CN=user`), written as `<name>.crt` and `<name>.key` in the
/// PKI folder. Returns (cert, key).
pub fn client_cert(pki: &Pki, name: &str, subject: &str) -> Result<(PathBuf, PathBuf), String> {
    let cnf = pki.dir.join("openssl.cnf");
    let cert = pki.dir.join(format!("{name}.crt"));
    let key = pki.dir.join(format!("{name}.key"));
    sign(pki, &cnf, name, subject, "client", &key, &cert)?;
    Ok((cert, key))
}

fn sign(
    pki: &Pki,
    cnf: &Path,
    name: &str,
    subject: &str,
    extensions: &str,
    key: &Path,
    cert: &Path,
) -> Result<(), String> {
    let csr = pki.dir.join(format!("{name}.csr"));
    openssl(&[
        "req",
        "-new",
        "-nodes",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-keyout",
        s(key),
        "-out",
        s(&csr),
        "-subj",
        subject,
        "-config",
        s(cnf),
    ])?;
    openssl(&[
        "x509",
        "-req",
        "-in",
        s(&csr),
        "-CA",
        s(&pki.ca_cert),
        "-CAkey",
        s(&pki.ca_key),
        "-set_serial",
        &serial(),
        "-days",
        "3650",
        "-extfile",
        s(cnf),
        "-extensions",
        extensions,
        "-out",
        s(cert),
    ])?;
    Ok(())
}

fn serial() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(1);
    format!("{}", nanos ^ u128::from(std::process::id()))
}

fn s(p: &Path) -> &str {
    p.to_str().expect("test paths are UTF-8")
}

fn openssl(args: &[&str]) -> Result<(), String> {
    let out = Command::new("openssl")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| {
            format!("cannot run openssl (Debian package `openssl`) for the test cluster's certificates: {e}")
        })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "openssl {} failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}
