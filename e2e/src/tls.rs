//! Certificates for the tests that speak TLS (the streaming server, registries).

/// A CA and a certificate for 127.0.0.1 it signed, made with openssl; returns the
/// CA file, the certificate and the key.
pub fn make_certs(
    dir: &std::path::Path,
) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    assert!(
        std::path::Path::new("/usr/bin/openssl").exists(),
        "install Debian's openssl"
    );
    std::fs::create_dir_all(dir).unwrap();
    let p = |n: &str| dir.join(n).display().to_string();
    let run = |args: &[&str]| {
        crate::run_cmd("openssl", args).unwrap();
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "1",
        "-subj",
        "/CN=crius test CA",
        "-keyout",
        &p("ca.key"),
        "-out",
        &p("ca.pem"),
    ]);
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=127.0.0.1",
        "-keyout",
        &p("srv.key"),
        "-out",
        &p("srv.csr"),
    ]);
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        &p("srv.csr"),
        "-CA",
        &p("ca.pem"),
        "-CAkey",
        &p("ca.key"),
        "-CAcreateserial",
        "-days",
        "1",
        "-extfile",
        &p("ext.cnf"),
        "-out",
        &p("srv.pem"),
    ]);
    (dir.join("ca.pem"), dir.join("srv.pem"), dir.join("srv.key"))
}
