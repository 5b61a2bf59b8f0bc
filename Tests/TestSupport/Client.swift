import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A minimal blocking HTTP/1.1 client on a Unix socket, so the tests control every byte sent
/// (curl's `--unix-socket` would hide the framing the server tests are about).
public final class Client {
    public let fd: Int32

    public init(_ path: String) throws {
        fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        var address = Client.address(path)
        let result = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard result == 0 else { Glibc.close(fd); throw ClientError(message: "connect \(path): errno \(errno)") }
        var timeout = timeval(tv_sec: 10, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
    }

    deinit { Glibc.close(fd) }

    public static func address(_ path: String) -> sockaddr_un {
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            for (i, b) in path.utf8.enumerated() { raw[i] = b }
        }
        return address
    }

    public func send(_ text: String) {
        let bytes = Array(text.utf8)
        _ = bytes.withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
    }

    public func close() { shutdown(fd, Int32(SHUT_RDWR)) }

    public struct Response: Sendable { public var status: Int; public var headers: String; public var body: String }

    /// One request with Content-Length framing; reads exactly one response.
    public func request(_ method: String, _ uri: String, _ body: String? = nil) throws -> Response {
        var text = "\(method) \(uri) HTTP/1.1\r\nHost: localhost\r\n"
        if let body { text += "Content-Type: application/json\r\nContent-Length: \(body.utf8.count)\r\n" }
        text += "\r\n" + (body ?? "")
        send(text)
        var received: [UInt8] = []
        while true {
            if let response = Self.parse(received) { return response }
            var chunk = [UInt8](repeating: 0, count: 4096)
            let n = recv(fd, &chunk, chunk.count, 0)
            guard n > 0 else { throw ClientError(message: "connection closed before a full response") }
            received += chunk[0..<n]
        }
    }

    /// Sends raw bytes and reads until the server closes or 2 s pass.
    public func raw(_ text: String) throws -> String {
        send(text)
        var timeout = timeval(tv_sec: 2, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var received: [UInt8] = []
        while true {
            var chunk = [UInt8](repeating: 0, count: 4096)
            let n = recv(fd, &chunk, chunk.count, 0)
            if n <= 0 { break }
            received += chunk[0..<n]
            if Self.parse(received) != nil { break }
        }
        return String(decoding: received, as: UTF8.self)
    }

    static func parse(_ bytes: [UInt8]) -> Response? {
        let text = String(decoding: bytes, as: UTF8.self)
        guard let end = text.range(of: "\r\n\r\n") else { return nil }
        let head = String(text[..<end.lowerBound])
        let length = head.split(separator: "\r\n").first { $0.lowercased().hasPrefix("content-length:") }
            .flatMap { Int($0.split(separator: ":")[1].trimmingCharacters(in: .whitespaces)) } ?? 0
        let body = Array(text[end.upperBound...].utf8)
        guard body.count >= length else { return nil }
        let status = Int(head.split(separator: " ")[1]) ?? 0
        return Response(status: status, headers: head, body: String(decoding: body.prefix(length), as: UTF8.self))
    }
}

public struct ClientError: Error, CustomStringConvertible {
    public init(message: String) { self.message = message }
    public let message: String
    public var description: String { message }
}
