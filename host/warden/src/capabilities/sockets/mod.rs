//! The `sockets` capability: `wasi:sockets`, denied unless granted with
//! `HOST:PORT` patterns ([`Grants::tcp`](crate::Grants::tcp),
//! [`Grants::tcp_listen`](crate::Grants::tcp_listen),
//! [`Grants::udp`](crate::Grants::udp), `--allow-tcp`, `--allow-tcp-listen`,
//! `--allow-udp`).
//!
//! A plugin without a TCP grant cannot create a TCP socket, nor one without
//! a UDP grant a UDP socket: the refusal comes before any descriptor is
//! opened, with `access-denied`, and is recorded as a denial. With a grant,
//! an instance holds at most [`Limits::sockets`](crate::Limits::sockets)
//! sockets at once (accepted connections included); one more fails with
//! `new-socket-limit`. The connections of its outgoing HTTP requests take
//! from the same count ([`ConnectionSlots`]).
//!
//! Every bind, connect, accept and datagram is checked against the patterns;
//! a refused address fails with `access-denied` and is recorded as a denial.
//! A connect grant ([`Grants::tcp`](crate::Grants::tcp)) does not allow
//! binding, listening or accepting: that is
//! [`Grants::tcp_listen`](crate::Grants::tcp_listen), which names the local
//! address and accepts connections from any peer. Name lookups are allowed
//! only for host names that appear in a pattern, so an ungranted plugin
//! cannot even use DNS as a side channel.
//!
//! This file is over 400 lines on purpose: the policy that checks addresses,
//! the wrappers that enforce it and the socket count they keep are one
//! policy, with its tests.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use wasmtime::StoreContextMut;
use wasmtime::component::{Linker, Resource, ResourceType};
use wasmtime_wasi::WasiCtxBuilder;
use wasmtime_wasi::p2::bindings::sockets;
use wasmtime_wasi::p2::bindings::sockets::ip_name_lookup::{self, ResolveAddressStream};
use wasmtime_wasi::p2::bindings::sockets::network::{ErrorCode, IpAddressFamily, Network};
use wasmtime_wasi::p2::bindings::sockets::tcp::HostTcpSocket;
use wasmtime_wasi::p2::bindings::sockets::udp::HostUdpSocket;
use wasmtime_wasi::p2::{DynInputStream, DynOutputStream, SocketError, TcpSocket, UdpSocket};
use wasmtime_wasi::sockets::{SocketAddrUse, WasiSockets, WasiSocketsView};

use super::{Capability, DenialLog, InstanceSetup, Risk};
use crate::error::Error;
use crate::grants::{Grants, Sandbox};
use crate::state::HostState;

/// The WASI version of the interfaces whose functions Warden wraps; the
/// linker's semver matching serves older 0.2 imports from them too.
const IP_NAME_LOOKUP: &str = "wasi:sockets/ip-name-lookup@0.2.12";
const TCP: &str = "wasi:sockets/tcp@0.2.12";
const TCP_CREATE_SOCKET: &str = "wasi:sockets/tcp-create-socket@0.2.12";
const UDP: &str = "wasi:sockets/udp@0.2.12";
const UDP_CREATE_SOCKET: &str = "wasi:sockets/udp-create-socket@0.2.12";

mod pattern;

pub use self::pattern::SocketPattern;

/// The `sockets` capability.
pub(crate) struct Sockets;

impl Capability for Sockets {
    const NAME: &'static str = "sockets";
    const INTERFACES: &'static [&'static str] = &[
        "wasi:sockets/network",
        "wasi:sockets/instance-network",
        "wasi:sockets/tcp",
        "wasi:sockets/tcp-create-socket",
        "wasi:sockets/udp",
        "wasi:sockets/udp-create-socket",
        "wasi:sockets/ip-name-lookup",
        // WASI 0.3's sockets (in world 0.2's imports; not provided yet).
        "wasi:sockets/types",
    ];
    const HOW_TO_GRANT: &'static str = "--allow-tcp HOST:PORT, --allow-tcp-listen ADDR or --allow-udp HOST:PORT, or `allow_tcp`, `allow_tcp_listen` or `allow_udp` in a manifest's [grants]";
    type Shared = Arc<SocketPolicy>;
    type State = SocketState;

    fn risk(_: &Sandbox) -> Risk {
        Risk::High
    }

    fn granted(sandbox: &Sandbox) -> bool {
        let grants = &sandbox.grants;
        !grants.tcp.is_empty() || !grants.tcp_listen.is_empty() || !grants.udp.is_empty()
    }

    fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
        let getter = <HostState as WasiSocketsView>::sockets;
        sockets::tcp::add_to_linker::<_, WasiSockets>(linker, getter)?;
        sockets::udp::add_to_linker::<_, WasiSockets>(linker, getter)?;
        sockets::tcp_create_socket::add_to_linker::<_, WasiSockets>(linker, getter)?;
        sockets::udp_create_socket::add_to_linker::<_, WasiSockets>(linker, getter)?;
        sockets::instance_network::add_to_linker::<_, WasiSockets>(linker, getter)?;
        sockets::network::add_to_linker::<_, WasiSockets>(linker, &Default::default(), getter)?;
        ip_name_lookup::add_to_linker::<_, WasiSockets>(linker, getter)?;
        // Replace the lookup and socket creation with versions that ask the
        // grants first and count live sockets, and the sockets' destructors with
        // ones that count them out.
        linker.allow_shadowing(true);
        let result = shadow_socket_functions(linker);
        linker.allow_shadowing(false);
        result
    }

    fn prepare(_: &str, sandbox: &Sandbox) -> Result<Arc<SocketPolicy>, Error> {
        Ok(Arc::new(SocketPolicy::new(&sandbox.grants)))
    }

    fn instantiate(policy: &Arc<SocketPolicy>, setup: &mut InstanceSetup<'_>) -> SocketState {
        configure(&mut setup.wasi, policy, setup.denials, &setup.sockets)
    }
}

fn shadow_socket_functions(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    linker
        .instance(IP_NAME_LOOKUP)?
        .func_wrap("resolve-addresses", resolve_addresses)?;
    linker
        .instance(TCP_CREATE_SOCKET)?
        .func_wrap("create-tcp-socket", create_tcp_socket)?;
    linker
        .instance(UDP_CREATE_SOCKET)?
        .func_wrap_async("create-udp-socket", |store, (family,)| {
            Box::new(create_udp_socket(store, family))
        })?;
    let mut tcp = linker.instance(TCP)?;
    tcp.resource(
        "tcp-socket",
        ResourceType::host::<TcpSocket>(),
        drop_tcp_socket,
    )?;
    tcp.func_wrap("[method]tcp-socket.accept", accept)?;
    linker.instance(UDP)?.resource(
        "udp-socket",
        ResourceType::host::<UdpSocket>(),
        drop_udp_socket,
    )?;
    Ok(())
}

/// A guest-facing result: domain errors go back to the guest, anything else
/// traps.
fn guest_result<T>(result: Result<T, SocketError>) -> wasmtime::Result<(Result<T, ErrorCode>,)> {
    match result {
        Ok(value) => Ok((Ok(value),)),
        Err(err) => err.downcast().map(|code| (Err(code),)),
    }
}

fn create_tcp_socket(
    mut store: StoreContextMut<'_, HostState>,
    (family,): (IpAddressFamily,),
) -> wasmtime::Result<(Result<Resource<TcpSocket>, ErrorCode>,)> {
    let state = store.data_mut();
    if let Err(code) = state.caps.sockets.admit(Protocol::Tcp, &state.caps.denials) {
        return Ok((Err(code),));
    }
    let created = sockets::tcp_create_socket::Host::create_tcp_socket(&mut state.sockets(), family);
    if created.is_ok() {
        state.caps.sockets.slots.open.opened();
    }
    guest_result(created)
}

async fn create_udp_socket(
    mut store: StoreContextMut<'_, HostState>,
    family: IpAddressFamily,
) -> wasmtime::Result<(Result<Resource<UdpSocket>, ErrorCode>,)> {
    let state = store.data_mut();
    if let Err(code) = state.caps.sockets.admit(Protocol::Udp, &state.caps.denials) {
        return Ok((Err(code),));
    }
    let created =
        sockets::udp_create_socket::Host::create_udp_socket(&mut state.sockets(), family).await;
    if created.is_ok() {
        state.caps.sockets.slots.open.opened();
    }
    guest_result(created)
}

type Accepted = (
    Resource<TcpSocket>,
    Resource<DynInputStream>,
    Resource<DynOutputStream>,
);

/// Accepts a connection if the instance may hold one more socket; a
/// connection left waiting stays in the listener's backlog.
fn accept(
    mut store: StoreContextMut<'_, HostState>,
    (listener,): (Resource<TcpSocket>,),
) -> wasmtime::Result<(Result<Accepted, ErrorCode>,)> {
    let state = store.data_mut();
    if state.caps.sockets.at_limit() {
        return Ok((Err(ErrorCode::NewSocketLimit),));
    }
    let accepted = HostTcpSocket::accept(&mut state.sockets(), listener);
    if accepted.is_ok() {
        state.caps.sockets.slots.open.opened();
    }
    guest_result(accepted)
}

fn drop_tcp_socket(mut store: StoreContextMut<'_, HostState>, rep: u32) -> wasmtime::Result<()> {
    let state = store.data_mut();
    HostTcpSocket::drop(&mut state.sockets(), Resource::new_own(rep))?;
    state.caps.sockets.slots.open.closed();
    Ok(())
}

fn drop_udp_socket(mut store: StoreContextMut<'_, HostState>, rep: u32) -> wasmtime::Result<()> {
    let state = store.data_mut();
    HostUdpSocket::drop(&mut state.sockets(), Resource::new_own(rep))?;
    state.caps.sockets.slots.open.closed();
    Ok(())
}

type LookupResult = Result<Resource<ResolveAddressStream>, ErrorCode>;

fn resolve_addresses(
    mut store: StoreContextMut<'_, HostState>,
    (network, name): (Resource<Network>, String),
) -> wasmtime::Result<(LookupResult,)> {
    let state = store.data_mut();
    if !state.caps.sockets.may_resolve(&name) {
        state
            .caps
            .denials
            .record("sockets", format!("name lookup of `{name}`"));
        return Ok((Err(ErrorCode::AccessDenied),));
    }
    match ip_name_lookup::Host::resolve_addresses(&mut state.sockets(), network, name) {
        Ok(stream) => Ok((Ok(stream),)),
        Err(err) => err.downcast().map(|code| (Err(code),)),
    }
}

/// The socket grants of one plugin, shared by its instances.
#[derive(Debug, Default)]
pub(crate) struct SocketPolicy {
    tcp: Vec<SocketPattern>,
    tcp_listen: Vec<SocketPattern>,
    udp: Vec<SocketPattern>,
}

/// The two kinds of socket a guest can create.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Protocol {
    Tcp,
    Udp,
}

impl SocketPolicy {
    fn new(grants: &Grants) -> Self {
        SocketPolicy {
            tcp: grants.tcp.clone(),
            tcp_listen: grants.tcp_listen.clone(),
            udp: grants.udp.clone(),
        }
    }

    fn patterns(&self) -> impl Iterator<Item = &SocketPattern> {
        self.tcp.iter().chain(&self.tcp_listen).chain(&self.udp)
    }

    /// Whether any grant lets the plugin create a socket of `protocol`.
    fn may_create(&self, protocol: Protocol) -> bool {
        match protocol {
            Protocol::Tcp => !self.tcp.is_empty() || !self.tcp_listen.is_empty(),
            Protocol::Udp => !self.udp.is_empty(),
        }
    }

    /// Names may be looked up only when a pattern names them (or allows any host).
    fn may_resolve(&self, name: &str) -> bool {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        self.patterns().any(|pattern| pattern.allows_lookup(&name))
    }

    async fn allows(&self, addr: SocketAddr, use_: SocketAddrUse) -> bool {
        // Binding an ephemeral port on every interface is how any outgoing
        // socket starts; what it may then reach is checked on connect, send
        // and receive, and listening on it needs a listen grant.
        let ephemeral = addr.port() == 0 && addr.ip().is_unspecified();
        if ephemeral && matches!(use_, SocketAddrUse::TcpBind | SocketAddrUse::UdpBind) {
            return true;
        }
        let patterns = match use_ {
            SocketAddrUse::TcpConnect => &self.tcp,
            SocketAddrUse::TcpBind | SocketAddrUse::TcpListen => &self.tcp_listen,
            // The listener passed the listen check for its local address;
            // a listen grant does not restrict who may connect to it.
            SocketAddrUse::TcpAccept => return !self.tcp_listen.is_empty(),
            SocketAddrUse::UdpBind | SocketAddrUse::UdpSend | SocketAddrUse::UdpReceive => {
                &self.udp
            }
        };
        for pattern in patterns {
            if pattern.matches(addr).await {
                return true;
            }
        }
        false
    }
}

/// How many sockets an instance holds open now: its `wasi:sockets` sockets
/// and the connections its outgoing HTTP requests keep. Cloning shares the
/// count, so a connection that ends on another thread gives its socket back.
#[derive(Clone, Debug, Default)]
pub(crate) struct OpenSockets(Arc<AtomicUsize>);

impl OpenSockets {
    fn count(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }

    fn opened(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one socket closed; saturating, though every close matches an
    /// earlier open, so that no mistake can turn the count into a huge one.
    fn closed(&self) {
        // The update always answers, so it cannot fail.
        let _ = self
            .0
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |open| {
                Some(open.saturating_sub(1))
            });
    }
}

/// One socket an outgoing HTTP connection holds of its instance's
/// [`Limits::sockets`](crate::Limits::sockets), given back when dropped.
#[derive(Debug)]
pub(crate) struct ConnectionSlot(OpenSockets);

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.0.closed();
    }
}

/// What the instance's outgoing HTTP connections take their sockets from.
#[derive(Clone, Debug, Default)]
pub(crate) struct ConnectionSlots {
    open: OpenSockets,
    limit: usize,
}

impl ConnectionSlots {
    /// No socket open yet, of at most `limit`.
    pub(crate) fn new(limit: usize) -> Self {
        ConnectionSlots {
            open: OpenSockets::default(),
            limit,
        }
    }

    /// A socket for one more connection, unless the instance holds its
    /// limit already.
    pub(crate) fn take(&self) -> Option<ConnectionSlot> {
        self.open
            .0
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |open| {
                (open < self.limit).then_some(open + 1)
            })
            .ok()
            .map(|_| ConnectionSlot(self.open.clone()))
    }
}

/// The socket state an instance keeps besides wasmtime-wasi's.
#[derive(Clone, Debug, Default)]
pub(crate) struct SocketState {
    policy: Arc<SocketPolicy>,
    /// Sockets the instance holds now, HTTP connections included, and the
    /// most it may hold at once ([`Limits::sockets`](crate::Limits::sockets)).
    slots: ConnectionSlots,
}

impl SocketState {
    fn may_resolve(&self, name: &str) -> bool {
        self.policy.may_resolve(name)
    }

    fn at_limit(&self) -> bool {
        self.slots.open.count() >= self.slots.limit
    }

    /// Whether the instance may create one more socket of `protocol`: an
    /// ungranted protocol is a denial, a full quota `new-socket-limit`.
    fn admit(&self, protocol: Protocol, denials: &DenialLog) -> Result<(), ErrorCode> {
        if !self.policy.may_create(protocol) {
            let (what, grant) = match protocol {
                Protocol::Tcp => ("TCP", "--allow-tcp or --allow-tcp-listen"),
                Protocol::Udp => ("UDP", "--allow-udp"),
            };
            denials.record(
                "sockets",
                format!("creating a {what} socket without a {grant} grant"),
            );
            return Err(ErrorCode::AccessDenied);
        }
        if self.at_limit() {
            return Err(ErrorCode::NewSocketLimit);
        }
        Ok(())
    }
}

/// Configures an instance's sockets: the grants decide what it may create,
/// and `slots` counts what it holds.
fn configure(
    wasi: &mut WasiCtxBuilder,
    policy: &Arc<SocketPolicy>,
    denials: &DenialLog,
    slots: &ConnectionSlots,
) -> SocketState {
    let check_policy = policy.clone();
    let denials = denials.clone();
    // Warden's wrappers refuse (and record) socket creation without a grant
    // before wasmtime-wasi sees it; these switches say the same to
    // wasmtime-wasi. Every address a socket uses then goes through the check.
    wasi.allow_tcp(policy.may_create(Protocol::Tcp))
        .allow_udp(policy.may_create(Protocol::Udp))
        .allow_ip_name_lookup(true)
        .socket_addr_check(move |addr, use_| {
            let policy = check_policy.clone();
            let denials = denials.clone();
            Box::pin(async move {
                let allowed = policy.allows(addr, use_).await;
                if !allowed {
                    denials.record("sockets", describe(use_, addr));
                }
                allowed
            })
        });
    SocketState {
        policy: policy.clone(),
        slots: slots.clone(),
    }
}

fn describe(use_: SocketAddrUse, addr: SocketAddr) -> String {
    let what = match use_ {
        SocketAddrUse::TcpBind => "TCP bind on",
        SocketAddrUse::TcpListen => "TCP listen on",
        SocketAddrUse::TcpAccept => "TCP accept from",
        SocketAddrUse::TcpConnect => "TCP connect to",
        SocketAddrUse::UdpBind => "UDP bind on",
        SocketAddrUse::UdpSend => "UDP send to",
        SocketAddrUse::UdpReceive => "UDP receive from",
    };
    format!("{what} {addr}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_slots_share_the_socket_count_and_are_given_back_once() {
        let slots = ConnectionSlots::new(2);
        let state = SocketState {
            slots: slots.clone(),
            ..SocketState::default()
        };
        let connection = slots.take().expect("a first connection fits");
        state.slots.open.opened();
        assert!(state.at_limit(), "a connection and a socket fill 2");
        assert!(slots.take().is_none(), "no third connection");
        drop(connection);
        assert!(
            !state.at_limit(),
            "the ended connection gave its socket back"
        );
        state.slots.open.closed();
        state.slots.open.closed();
        assert_eq!(
            state.slots.open.count(),
            0,
            "one close too many never wraps"
        );
        let connections: Vec<_> = (0..3).filter_map(|_| slots.take()).collect();
        assert_eq!(connections.len(), 2);
    }

    #[test]
    fn lookups_are_allowed_only_for_named_hosts() {
        let grants = Grants {
            tcp: vec![
                "db.internal:5432".parse().unwrap(),
                "10.0.0.1:80".parse().unwrap(),
            ],
            ..Grants::default()
        };
        let policy = SocketPolicy::new(&grants);
        assert!(policy.may_resolve("db.internal"));
        assert!(policy.may_resolve("DB.Internal."));
        assert!(!policy.may_resolve("evil.example"));
        assert!(!SocketPolicy::default().may_resolve("db.internal"));
    }

    #[tokio::test]
    async fn tcp_and_udp_grants_are_separate() {
        let grants = Grants {
            tcp: vec!["127.0.0.1:80".parse().unwrap()],
            ..Grants::default()
        };
        let policy = SocketPolicy::new(&grants);
        let addr: SocketAddr = "127.0.0.1:80".parse().unwrap();
        assert!(policy.allows(addr, SocketAddrUse::TcpConnect).await);
        assert!(!policy.allows(addr, SocketAddrUse::UdpSend).await);
        assert!(
            !policy
                .allows("127.0.0.1:81".parse().unwrap(), SocketAddrUse::TcpConnect)
                .await
        );
    }

    #[tokio::test]
    async fn a_connect_grant_does_not_allow_listening() {
        let addr: SocketAddr = "127.0.0.1:8081".parse().unwrap();
        let connect_only = SocketPolicy::new(&Grants {
            tcp: vec!["127.0.0.1:8081".parse().unwrap()],
            ..Grants::default()
        });
        for use_ in [
            SocketAddrUse::TcpBind,
            SocketAddrUse::TcpListen,
            SocketAddrUse::TcpAccept,
        ] {
            assert!(!connect_only.allows(addr, use_).await, "{use_:?}");
        }
        let listen = SocketPolicy::new(&Grants {
            tcp_listen: vec!["127.0.0.1:8081".parse().unwrap()],
            ..Grants::default()
        });
        assert!(listen.allows(addr, SocketAddrUse::TcpBind).await);
        assert!(listen.allows(addr, SocketAddrUse::TcpListen).await);
        let peer: SocketAddr = "127.0.0.1:50000".parse().unwrap();
        assert!(listen.allows(peer, SocketAddrUse::TcpAccept).await);
        assert!(!listen.allows(addr, SocketAddrUse::TcpConnect).await);
        let anywhere: SocketAddr = "0.0.0.0:40000".parse().unwrap();
        assert!(!listen.allows(anywhere, SocketAddrUse::TcpListen).await);
    }

    #[test]
    fn creation_needs_a_grant_of_the_protocol() {
        let tcp_only = SocketPolicy::new(&Grants {
            tcp: vec!["127.0.0.1:80".parse().unwrap()],
            ..Grants::default()
        });
        assert!(tcp_only.may_create(Protocol::Tcp));
        assert!(!tcp_only.may_create(Protocol::Udp));
        assert!(!SocketPolicy::default().may_create(Protocol::Tcp));
    }
}
