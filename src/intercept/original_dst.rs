//! The original destination of a connection that iptables redirected to
//! breakwater (`SO_ORIGINAL_DST`, `IP6T_SO_ORIGINAL_DST`): the one socket
//! option transparent listeners need, through `socket2`, so breakwater has
//! no unsafe code of its own for it.

use std::net::SocketAddr;

use tokio::net::TcpStream;

/// Where `stream` was going before a `REDIRECT` brought it here, or `None`
/// when it was not redirected: the socket has no NAT record (no conntrack
/// entry), or the record says it came here directly.
pub fn original_dst(stream: &TcpStream) -> Option<SocketAddr> {
    let local = stream.local_addr().ok()?;
    let socket = socket2::SockRef::from(stream);
    let address = if local.is_ipv4() {
        socket.original_dst_v4()
    } else {
        socket.original_dst_v6()
    };
    let original = address.ok()?.as_socket()?;
    // A connection made to breakwater's own address has the same original
    // destination: it was not redirected.
    (original != local).then_some(original)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_direct_connection_has_no_original_destination() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let _client = TcpStream::connect(address).await.unwrap();
        let (accepted, _) = listener.accept().await.unwrap();
        assert_eq!(original_dst(&accepted), None);
    }
}
