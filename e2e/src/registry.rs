//! Registries for the image tests: Debian's `docker-registry` on a random loopback
//! port with its own storage (optionally behind htpasswd basic auth), and a tiny
//! hand-written registry that misbehaves on purpose (stalls, wrong digests).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use sha2::Digest as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// `sha256:<hex>` of `bytes`.
pub fn sha256(bytes: &[u8]) -> String {
    let d = sha2::Sha256::digest(bytes);
    let mut s = String::from("sha256:");
    for b in d.iter() {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// A free loopback port (bound and released; the registry binds it right after).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("finding a free port")
}

/// Fails unless the registry answered `201 Created`, with what it said.
async fn created(resp: reqwest::Response, what: &str) -> Result<()> {
    if resp.status().as_u16() != 201 {
        bail!(
            "{what}: {} {}",
            resp.status(),
            resp.text().await.unwrap_or_default()
        );
    }
    Ok(())
}

/// Runs `docker-registry serve config`, its output to `log_path`.
fn serve(config: &Path, log_path: &Path) -> Result<Child> {
    let log = std::fs::File::create(log_path)?;
    Command::new("/usr/bin/docker-registry")
        .arg("serve")
        .arg(config)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .with_context(|| format!("starting docker-registry with {}", config.display()))
}

/// A running `docker-registry`.
pub struct TestRegistry {
    pub host: String,
    pub root: PathBuf,
    pub log_path: PathBuf,
    pub auth: Option<(String, String)>,
    child: Option<Child>,
    http: reqwest::Client,
    /// Whether dropping the registry removes `root` (it made the root itself).
    owns_root: bool,
}

impl TestRegistry {
    /// Starts a registry under `root` (storage, config, log), with basic auth when
    /// `auth` is given.
    pub async fn start(root: &Path, auth: Option<(&str, &str)>) -> Result<TestRegistry> {
        let bin = "/usr/bin/docker-registry";
        if !Path::new(bin).exists() {
            bail!("{bin} is missing: install Debian's docker-registry package");
        }
        std::fs::create_dir_all(root)?;
        let port = free_port();
        let mut auth_yaml = String::new();
        if let Some((user, pass)) = auth {
            let hash = bcrypt::hash(pass, 5).context("hashing the test password")?;
            let htpasswd = root.join("htpasswd");
            std::fs::write(&htpasswd, format!("{user}:{hash}\n"))?;
            auth_yaml = format!(
                "auth:\n  htpasswd:\n    realm: crius-test\n    path: {}\n",
                htpasswd.display()
            );
        }
        let config = root.join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: false\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n{auth_yaml}",
                root.join("storage").display()
            ),
        )?;
        let log_path = root.join("registry.log");
        let child = serve(&config, &log_path)?;
        let mut reg = TestRegistry {
            host: format!("127.0.0.1:{port}"),
            root: root.to_path_buf(),
            log_path,
            auth: auth.map(|(u, p)| (u.to_string(), p.to_string())),
            child: Some(child),
            http: reqwest::Client::new(),
            owns_root: false,
        };
        let start = Instant::now();
        loop {
            if let Some(c) = reg.child.as_mut() {
                if let Some(status) = c.try_wait()? {
                    bail!(
                        "docker-registry exited ({status}): {}",
                        std::fs::read_to_string(&reg.log_path).unwrap_or_default()
                    );
                }
            }
            if let Ok(resp) = reg.get("/v2/").await {
                if resp.status().is_success() || resp.status().as_u16() == 401 {
                    return Ok(reg);
                }
            }
            if start.elapsed() > Duration::from_secs(20) {
                bail!("docker-registry did not answer on {}", reg.host);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Serves this registry's storage over TLS too, on a port of its own (`cert` and
    /// `key`: PEM files), without auth. Dropping the twin stops its process only.
    pub async fn tls_twin(&self, cert: &Path, key: &Path) -> Result<TestRegistry> {
        let port = free_port();
        let config = self.root.join(format!("config-tls-{port}.yml"));
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: false\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n  tls:\n    certificate: {}\n    key: {}\n",
                self.root.join("storage").display(),
                cert.display(),
                key.display()
            ),
        )?;
        let log_path = self.root.join(format!("registry-tls-{port}.log"));
        let child = serve(&config, &log_path)?;
        let mut twin = TestRegistry {
            host: format!("127.0.0.1:{port}"),
            root: self.root.clone(),
            log_path,
            auth: None,
            child: Some(child),
            http: reqwest::Client::new(),
            owns_root: false,
        };
        let start = Instant::now();
        loop {
            if let Some(status) = twin
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                bail!(
                    "docker-registry (TLS) exited ({status}): {}",
                    std::fs::read_to_string(&twin.log_path).unwrap_or_default()
                );
            }
            if tokio::net::TcpStream::connect(&twin.host).await.is_ok() {
                return Ok(twin);
            }
            if start.elapsed() > Duration::from_secs(20) {
                bail!("docker-registry (TLS) did not listen on {}", twin.host);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Starts a registry on a unique scratch root of its own (see
    /// [`unique_root`](crate::unique_root)), which dropping it removes.
    pub async fn start_unique(tag: &str, auth: Option<(&str, &str)>) -> Result<TestRegistry> {
        let root = crate::unique_root(tag);
        match TestRegistry::start(&root, auth).await {
            Ok(mut reg) => {
                reg.owns_root = true;
                Ok(reg)
            }
            Err(e) => {
                let _ = std::fs::remove_dir_all(&root);
                Err(e)
            }
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.host)
    }

    fn authed(&self, rb: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.auth {
            Some((u, p)) => rb.basic_auth(u, Some(p)),
            None => rb,
        }
    }

    /// A request to `path` on the registry, with its credentials.
    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.authed(self.http.request(method, self.url(path)))
    }

    async fn get(&self, path: &str) -> reqwest::Result<reqwest::Response> {
        self.http.get(self.url(path)).send().await
    }

    /// Uploads a blob (monolithic) unless it is there; returns its digest.
    pub async fn push_blob(&self, repo: &str, bytes: &[u8]) -> Result<String> {
        let digest = sha256(bytes);
        let head = self
            .request(reqwest::Method::HEAD, &format!("/v2/{repo}/blobs/{digest}"))
            .send()
            .await?;
        if head.status().is_success() {
            return Ok(digest);
        }
        let start = self
            .request(reqwest::Method::POST, &format!("/v2/{repo}/blobs/uploads/"))
            .send()
            .await?;
        if start.status().as_u16() != 202 {
            bail!("starting an upload: {}", start.status());
        }
        let location = start
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .context("upload location")?
            .to_string();
        let sep = if location.contains('?') { '&' } else { '?' };
        let target = if location.starts_with("http") {
            format!("{location}{sep}digest={digest}")
        } else {
            self.url(&format!("{location}{sep}digest={digest}"))
        };
        let put = self
            .authed(self.http.put(target))
            .header("content-type", "application/octet-stream")
            .body(bytes.to_vec())
            .send()
            .await?;
        created(put, &format!("uploading blob {digest}")).await?;
        Ok(digest)
    }

    /// Uploads a manifest under `reference` (a tag or digest); returns its digest.
    pub async fn push_manifest(
        &self,
        repo: &str,
        reference: &str,
        media_type: &str,
        bytes: &[u8],
    ) -> Result<String> {
        let put = self
            .request(
                reqwest::Method::PUT,
                &format!("/v2/{repo}/manifests/{reference}"),
            )
            .header("content-type", media_type)
            .body(bytes.to_vec())
            .send()
            .await?;
        created(put, &format!("uploading manifest {repo}:{reference}")).await?;
        Ok(sha256(bytes))
    }

    /// How many times the registry served a GET of `digest`'s blob.
    pub fn blob_gets(&self, digest: &str) -> usize {
        std::fs::read_to_string(&self.log_path)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("\"GET /v2/") && l.contains(&format!("/blobs/{digest}")))
            .count()
    }

    /// Stops the registry.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        self.stop();
        if self.owns_root {
            let _ = std::fs::remove_dir_all(&self.root);
        }
    }
}

/// What the fake registry does with a blob.
#[derive(Debug, Clone)]
pub enum BlobBehaviour {
    /// Serve these bytes.
    Serve(Vec<u8>),
    /// Send the headers and this many bytes of the content, then nothing more.
    StallAfter(Vec<u8>, usize),
}

/// A minimal HTTP/1.1 registry on loopback, serving fixed manifests and blobs.
pub struct FakeRegistry {
    pub host: String,
    pub requests: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl FakeRegistry {
    /// `manifests`: path after `/v2/` (`repo/manifests/ref`) → (media type, bytes).
    /// `blobs`: digest → behaviour.
    pub async fn start(
        manifests: HashMap<String, (String, Vec<u8>)>,
        blobs: HashMap<String, BlobBehaviour>,
    ) -> Result<FakeRegistry> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let host = listener.local_addr()?.to_string();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let log = requests.clone();
        let manifests = Arc::new(manifests);
        let blobs = Arc::new(blobs);
        let task = tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                let manifests = manifests.clone();
                let blobs = blobs.clone();
                let log = log.clone();
                tokio::spawn(async move {
                    loop {
                        let mut buf = Vec::new();
                        let mut byte = [0u8; 1];
                        while !buf.ends_with(b"\r\n\r\n") {
                            match sock.read(&mut byte).await {
                                Ok(1) => buf.push(byte[0]),
                                _ => return,
                            }
                        }
                        let head = String::from_utf8_lossy(&buf).to_string();
                        let line = head.lines().next().unwrap_or_default().to_string();
                        log.lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .push(line.clone());
                        let mut parts = line.split(' ');
                        let method = parts.next().unwrap_or_default().to_string();
                        let path = parts.next().unwrap_or_default().to_string();
                        let path = path.split('?').next().unwrap_or_default().to_string();
                        let reply = |status: &str, ctype: &str, body: &[u8], extra: &str| {
                            let mut r = format!(
                                "HTTP/1.1 {status}\r\ncontent-type: {ctype}\r\ncontent-length: {}\r\n{extra}\r\n",
                                body.len()
                            )
                            .into_bytes();
                            if method != "HEAD" {
                                r.extend_from_slice(body);
                            }
                            r
                        };
                        let out = if path == "/v2/" {
                            reply("200 OK", "application/json", b"{}", "")
                        } else if let Some(rest) = path.strip_prefix("/v2/") {
                            if let Some((mt, bytes)) = manifests.get(rest) {
                                reply(
                                    "200 OK",
                                    mt,
                                    bytes,
                                    &format!("docker-content-digest: {}\r\n", sha256(bytes)),
                                )
                            } else if let Some(d) = rest.split("/blobs/").nth(1) {
                                match blobs.get(d) {
                                    Some(BlobBehaviour::Serve(b)) => reply("200 OK", "application/octet-stream", b, ""),
                                    Some(BlobBehaviour::StallAfter(b, n)) => {
                                        let head = format!(
                                            "HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\ncontent-length: {}\r\n\r\n",
                                            b.len()
                                        );
                                        let _ = sock.write_all(head.as_bytes()).await;
                                        let _ = sock.write_all(&b[..(*n).min(b.len())]).await;
                                        let _ = sock.flush().await;
                                        // Never send the rest; hold the connection open.
                                        tokio::time::sleep(Duration::from_secs(3600)).await;
                                        return;
                                    }
                                    None => reply("404 Not Found", "application/json", br#"{"errors":[{"code":"BLOB_UNKNOWN","message":"blob unknown"}]}"#, ""),
                                }
                            } else {
                                reply("404 Not Found", "application/json", br#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}"#, "")
                            }
                        } else {
                            reply("404 Not Found", "text/plain", b"not found", "")
                        };
                        if sock.write_all(&out).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        Ok(FakeRegistry {
            host,
            requests,
            task,
        })
    }
}

impl Drop for FakeRegistry {
    fn drop(&mut self) {
        self.task.abort();
    }
}
