//! process.args, process.env and process.cwd as Kubernetes defines them over the
//! image's config, and the process of an exec in a running container.

use crius_cri_api::v1 as cri;
use oci_spec::runtime::Process;

use crate::error::{Result, SpecError, invalid};
use crate::{DEFAULT_PATH, ImageConfig};

/// process.args: CRI command replaces ENTRYPOINT (and drops CMD); CRI args replace CMD.
pub(crate) fn command(config: &cri::ContainerConfig, image: &ImageConfig) -> Result<Vec<String>> {
    let mut args = if !config.command.is_empty() {
        config.command.clone()
    } else {
        image.entrypoint.clone()
    };
    if !config.args.is_empty() {
        args.extend(config.args.iter().cloned());
    } else if config.command.is_empty() {
        args.extend(image.cmd.iter().cloned());
    }
    if args.is_empty() {
        return Err(invalid(
            "config.command",
            "no command: neither the request nor the image sets an entrypoint, command or args",
        ));
    }
    Ok(args)
}

fn key_of(entry: &str) -> &str {
    entry.split_once('=').map_or(entry, |(k, _)| k)
}

fn set_env(env: &mut Vec<String>, key: &str, entry: String) {
    match env.iter_mut().find(|e| key_of(e) == key) {
        Some(e) => *e = entry,
        None => env.push(entry),
    }
}

fn has_env(env: &[String], key: &str) -> bool {
    env.iter().any(|e| key_of(e) == key)
}

/// process.env: PATH default, HOSTNAME, the image's, the request's (by key), TERM for
/// a terminal, HOME.
pub(crate) fn environment(
    config: &cri::ContainerConfig,
    image: &ImageConfig,
    hostname: &str,
    home: &str,
) -> Result<Vec<String>> {
    let mut env = vec![
        format!("PATH={DEFAULT_PATH}"),
        format!("HOSTNAME={hostname}"),
    ];
    for entry in &image.env {
        let key = key_of(entry);
        if key.is_empty() {
            continue;
        }
        set_env(&mut env, key, entry.clone());
    }
    for (i, kv) in config.envs.iter().enumerate() {
        if kv.key.is_empty() || kv.key.contains(['=', '\0']) {
            return Err(invalid(
                format!("config.envs[{i}].key"),
                format!(
                    "{:?} is not a usable variable name (empty, or holds '=' or NUL)",
                    kv.key
                ),
            ));
        }
        // The CRI carries values as bytes; an OCI process environment is strings.
        let Ok(value) = std::str::from_utf8(&kv.value) else {
            return Err(invalid(
                format!("config.envs[{i}].value"),
                "is not valid UTF-8",
            ));
        };
        if value.contains('\0') {
            return Err(invalid(
                format!("config.envs[{i}].value"),
                "must not contain a NUL byte",
            ));
        }
        set_env(&mut env, &kv.key, format!("{}={value}", kv.key));
    }
    if config.tty && !has_env(&env, "TERM") {
        env.push("TERM=xterm".to_string());
    }
    if !has_env(&env, "HOME") {
        env.push(format!("HOME={home}"));
    }
    Ok(env)
}

/// process.cwd: the request's, the image's, or "/".
pub(crate) fn working_dir(config: &cri::ContainerConfig, image: &ImageConfig) -> Result<String> {
    if !config.working_dir.is_empty() {
        if !config.working_dir.starts_with('/') {
            return Err(invalid(
                "config.working_dir",
                format!("{:?} is not an absolute path", config.working_dir),
            ));
        }
        return Ok(config.working_dir.clone());
    }
    if image.working_dir.is_empty() {
        return Ok("/".to_string());
    }
    if image.working_dir.starts_with('/') {
        Ok(image.working_dir.clone())
    } else {
        Ok(format!("/{}", image.working_dir))
    }
}

/// The part of a config.json an exec needs.
#[derive(serde::Deserialize)]
struct ProcessOnly {
    process: Option<Process>,
}

/// The OCI process of a command run in a container (ExecSync, Exec): the container's
/// own process (user, env, cwd, capabilities, …) from its `config_json`, with `cmd` as
/// the arguments, `tty` as the terminal, and `TERM=xterm` added for a terminal when
/// the environment has no TERM.
pub fn exec_process(
    config_json: &[u8],
    cmd: &[String],
    tty: bool,
) -> std::result::Result<Process, SpecError> {
    let spec: ProcessOnly =
        serde_json::from_slice(config_json).map_err(|e| SpecError::Corrupt {
            context: "the container's config.json is unreadable".into(),
            source: Some(e),
        })?;
    let mut process = spec.process.ok_or_else(|| SpecError::Corrupt {
        context: "the container's config.json has no process".into(),
        source: None,
    })?;
    process.set_args(Some(cmd.to_vec()));
    process.set_terminal(Some(tty));
    if tty {
        let env = process.env_mut().get_or_insert_with(Vec::new);
        if !env.iter().any(|e| e.starts_with("TERM=")) {
            env.push("TERM=xterm".to_string());
        }
    }
    Ok(process)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn v(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn image() -> ImageConfig {
        ImageConfig {
            entrypoint: v(&["/ep"]),
            cmd: v(&["c1", "c2"]),
            env: v(&["PATH=/img/bin", "A=1", "B=2"]),
            ..Default::default()
        }
    }

    #[test]
    fn command_and_args_follow_kubernetes() {
        let mut img = image();
        let mut c = cri::ContainerConfig::default();
        assert_eq!(command(&c, &img).unwrap(), v(&["/ep", "c1", "c2"]));
        c.args = v(&["a1"]);
        assert_eq!(command(&c, &img).unwrap(), v(&["/ep", "a1"]));
        c.command = v(&["/cmd"]);
        assert_eq!(command(&c, &img).unwrap(), v(&["/cmd", "a1"]));
        c.args.clear();
        // A command drops the image's CMD too.
        assert_eq!(command(&c, &img).unwrap(), v(&["/cmd"]));
        c.command.clear();
        img.entrypoint.clear();
        assert_eq!(command(&c, &img).unwrap(), v(&["c1", "c2"]));
        img.cmd.clear();
        assert_eq!(
            command(&c, &img).unwrap_err().field(),
            Some("config.command")
        );
    }

    fn env_of(env: &[String], key: &str) -> Option<String> {
        env.iter()
            .find_map(|e| e.strip_prefix(&format!("{key}=")).map(str::to_string))
    }

    #[test]
    fn env_is_merged_over_the_image() {
        let mut img = image();
        let mut c = cri::ContainerConfig {
            envs: vec![
                cri::KeyValue {
                    key: "A".into(),
                    value: "override".into(),
                },
                cri::KeyValue {
                    key: "C".into(),
                    value: "3".into(),
                },
            ],
            ..Default::default()
        };
        let env = environment(&c, &img, "web-0", "/root").unwrap();
        assert_eq!(env_of(&env, "PATH").unwrap(), "/img/bin");
        assert_eq!(env_of(&env, "A").unwrap(), "override");
        assert_eq!(env_of(&env, "B").unwrap(), "2");
        assert_eq!(env_of(&env, "C").unwrap(), "3");
        assert_eq!(env_of(&env, "HOSTNAME").unwrap(), "web-0");
        assert_eq!(env_of(&env, "HOME").unwrap(), "/root");
        assert!(env_of(&env, "TERM").is_none());
        assert_eq!(env.iter().filter(|e| e.starts_with("A=")).count(), 1);

        img.env.clear();
        c.tty = true;
        c.envs.push(cri::KeyValue {
            key: "HOME".into(),
            value: "/h".into(),
        });
        let env = environment(&c, &img, "web-0", "/root").unwrap();
        assert_eq!(env_of(&env, "PATH").unwrap(), DEFAULT_PATH);
        assert_eq!(env_of(&env, "HOME").unwrap(), "/h");
        assert_eq!(env_of(&env, "TERM").unwrap(), "xterm");

        c.envs.push(cri::KeyValue {
            key: "".into(),
            value: "x".into(),
        });
        let e = environment(&c, &img, "", "/").unwrap_err();
        assert_eq!(e.field(), Some("config.envs[3].key"));
        c.envs[3] = cri::KeyValue {
            key: "K".into(),
            value: "a\0b".into(),
        };
        let e = environment(&c, &img, "", "/").unwrap_err();
        assert_eq!(e.field(), Some("config.envs[3].value"));
        c.envs[3].value = vec![b'a', 0xff];
        let e = environment(&c, &img, "", "/").unwrap_err();
        assert_eq!(e.field(), Some("config.envs[3].value"));
        assert!(e.to_string().contains("UTF-8"), "{e}");
    }

    #[test]
    fn working_dir_request_image_default() {
        let mut img = image();
        let mut c = cri::ContainerConfig::default();
        assert_eq!(working_dir(&c, &img).unwrap(), "/");
        img.working_dir = "srv".into();
        assert_eq!(working_dir(&c, &img).unwrap(), "/srv");
        img.working_dir = "/srv".into();
        assert_eq!(working_dir(&c, &img).unwrap(), "/srv");
        c.working_dir = "/work".into();
        assert_eq!(working_dir(&c, &img).unwrap(), "/work");
        c.working_dir = "rel".into();
        assert_eq!(
            working_dir(&c, &img).unwrap_err().field(),
            Some("config.working_dir")
        );
    }

    fn config_json(process: serde_json::Value) -> Vec<u8> {
        serde_json::to_vec(&json!({"ociVersion": "1.1.0", "process": process})).unwrap()
    }

    #[test]
    fn exec_process_keeps_the_container_process_but_the_command() {
        let spec = config_json(json!({
            "terminal": false,
            "user": {"uid": 1000, "gid": 44, "additionalGids": [44, 10]},
            "args": ["/ep"],
            "env": ["PATH=/bin", "HOME=/h"],
            "cwd": "/work",
            "capabilities": {"bounding": ["CAP_KILL"], "effective": ["CAP_KILL"]},
            "noNewPrivileges": true,
            "oomScoreAdj": 5,
        }));
        let cmd = v(&["sh", "-c", "id"]);
        let p = serde_json::to_value(exec_process(&spec, &cmd, false).unwrap()).unwrap();
        assert_eq!(
            p,
            json!({
                "terminal": false,
                "user": {"uid": 1000, "gid": 44, "additionalGids": [44, 10]},
                "args": ["sh", "-c", "id"],
                "env": ["PATH=/bin", "HOME=/h"],
                "cwd": "/work",
                "capabilities": {"bounding": ["CAP_KILL"], "effective": ["CAP_KILL"]},
                "noNewPrivileges": true,
                "oomScoreAdj": 5,
            })
        );
        // A terminal gets TERM unless the container sets one.
        let p = exec_process(&spec, &cmd, true).unwrap();
        assert_eq!(p.terminal(), Some(true));
        assert_eq!(
            p.env().as_deref(),
            Some(&v(&["PATH=/bin", "HOME=/h", "TERM=xterm"])[..])
        );
        let spec = config_json(json!({"cwd": "/", "user": {"uid": 0, "gid": 0},
            "env": ["TERM=vt100"]}));
        let p = exec_process(&spec, &cmd, true).unwrap();
        assert_eq!(p.env().as_deref(), Some(&v(&["TERM=vt100"])[..]));
        let spec = config_json(json!({"cwd": "/", "user": {"uid": 0, "gid": 0}}));
        let p = exec_process(&spec, &cmd, true).unwrap();
        assert_eq!(p.env().as_deref(), Some(&v(&["TERM=xterm"])[..]));
        let p = exec_process(&spec, &cmd, false).unwrap();
        assert_eq!(p.env(), &None);
    }

    #[test]
    fn exec_process_of_a_broken_config_is_refused() {
        let e = exec_process(b"{", &v(&["true"]), false).unwrap_err();
        assert!(
            matches!(
                e,
                SpecError::Corrupt {
                    source: Some(_),
                    ..
                }
            ),
            "{e}"
        );
        let e = exec_process(b"{\"ociVersion\":\"1.1.0\"}", &v(&["true"]), false).unwrap_err();
        assert!(matches!(e, SpecError::Corrupt { source: None, .. }), "{e}");
    }
}
