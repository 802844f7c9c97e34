//! Task events for containerd (only when containerd started the shim).
//!
//! containerd's shims publish TaskCreate/Start/Exit/Delete/ExecAdded/ExecStarted by
//! calling `containerd.services.events.ttrpc.v1.Events/Forward` on the ttrpc address
//! containerd passes in `TTRPC_ADDRESS`, in the shim's `-namespace`. criusd does not use
//! events (it calls Wait), so in crius mode this is a no-op.

use std::time::{Duration, SystemTime};

use containerd_shim_protos::EventsClient;
use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::protobuf::well_known_types::timestamp::Timestamp;
use containerd_shim_protos::protobuf::{Message, MessageField};
use containerd_shim_protos::shim::event::Envelope;
use containerd_shim_protos::shim::events::ForwardRequest;

pub(crate) struct Publisher {
    target: Option<(String, String)>,
}

pub(crate) fn timestamp(t: SystemTime) -> MessageField<Timestamp> {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let mut ts = Timestamp::new();
    ts.seconds = i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
    ts.nanos = i32::try_from(d.subsec_nanos()).unwrap_or(0);
    MessageField::some(ts)
}

impl Publisher {
    /// Publishes to containerd when both its ttrpc address and a namespace are known.
    pub(crate) fn new(ttrpc_address: Option<String>, namespace: &str) -> Self {
        let target = match ttrpc_address {
            Some(a) if !a.is_empty() && !namespace.is_empty() => {
                let a = if a.starts_with("unix://") {
                    a
                } else {
                    format!("unix://{a}")
                };
                Some((a, namespace.to_string()))
            }
            _ => None,
        };
        Publisher { target }
    }

    /// Best effort: a failure is logged, never returned (as containerd's shims do).
    pub(crate) fn publish(&self, topic: &str, type_name: &str, event: &impl Message) {
        let Some((addr, ns)) = &self.target else {
            return;
        };
        let res = (|| -> Result<(), String> {
            let mut any = Any::new();
            any.type_url = type_name.to_string();
            any.value = event.write_to_bytes().map_err(|e| e.to_string())?;
            let mut env = Envelope::new();
            env.timestamp = timestamp(SystemTime::now());
            env.namespace = ns.clone();
            env.topic = topic.to_string();
            env.event = MessageField::some(any);
            let mut req = ForwardRequest::new();
            req.envelope = MessageField::some(env);
            let client = ttrpc::Client::connect(addr).map_err(|e| e.to_string())?;
            EventsClient::new(client)
                .forward(ttrpc::context::with_duration(Duration::from_secs(5)), &req)
                .map(|_| ())
                .map_err(|e| e.to_string())
        })();
        if let Err(e) = res {
            eprintln!("crius-shim: publishing {topic}: {e}");
        }
    }
}
