#if canImport(Glibc)
import Glibc
#endif

/// The round-trip floor's server thread: accepts one client on the listening socket `raw` points
/// at, and answers every read with a canned `GET /` response until the client hangs up.
func floorServer(_ raw: UnsafeMutableRawPointer?) -> UnsafeMutableRawPointer? {
    let body = #"{"app_name":"Swiftlet","id":"anonymous-instance","state":"Not started","vmm_version":"0.1.0"}"#
    let canned = Array("HTTP/1.1 200 OK\r\nContent-Length: \(body.utf8.count)\r\nContent-Type: application/json\r\n\r\n\(body)".utf8)
    let client = accept(raw!.assumingMemoryBound(to: Int32.self).pointee, nil, nil)
    var buffer = [UInt8](repeating: 0, count: 4096)
    while recv(client, &buffer, buffer.count, 0) > 0 {
        _ = canned.withUnsafeBytes { send(client, $0.baseAddress, $0.count, 0) }
    }
    close(client)
    return nil
}
