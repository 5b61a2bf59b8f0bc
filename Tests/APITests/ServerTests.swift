@testable import API
import APISocket
import Foundation
import TestSupport
import VMM
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// The API over a real Unix socket: HTTP framing, keep-alive, several clients, the size limit,
/// clients that misbehave, and the socket file's rules. No KVM: the VM is a fake.
@Suite(.serialized) final class ServerTests {
    let host: FakeHost
    let path: String
    let server: APIServer
    let loopThread: NativeThread

    init() throws {
        host = try FakeHost()
        path = "/tmp/swiftlet-api-test-\(getpid())-\(UInt32.random(in: 0...UInt32.max)).sock"
        server = try APIServer.start(path: path, router: APIRouter(controller: host.controller()), on: host.loop, maxBodyBytes: 1024)
        let loop = host.loop
        loopThread = try NativeThread(name: "api-test-loop") { loop.run() }
    }

    deinit {
        server.shutdown()
        host.loop.stop()
        loopThread.join()
    }

    @Test func socketIsPrivateAndRemovedAtShutdown() throws {
        var info = stat()
        #expect(lstat(path, &info) == 0)
        #expect(info.st_mode & S_IFMT == S_IFSOCK)
        #expect(info.st_mode & 0o777 == 0o600)
        server.shutdown()
        #expect(lstat(path, &info) != 0, "the socket file is still there after shutdown")
    }

    @Test func aLiveSocketIsRefusedAStaleOneReplaced() throws {
        #expect(throws: APIServerError.self) {
            _ = try APIServer.start(path: path, router: APIRouter(controller: host.controller()), on: host.loop)
        }
        // Still serving after the refused attempt.
        #expect(try Client(path).request("GET", "/").status == 200)
        server.shutdown()
        // A stale socket: bound, then its process gone (a listening socket closed without unlink).
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        var address = Client.address(path)
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        #expect(bound == 0)
        close(fd)
        let second = try APIServer.start(path: path, router: APIRouter(controller: host.controller()), on: host.loop)
        defer { second.shutdown() }
        #expect(try Client(path).request("GET", "/").status == 200)
        // Not a socket: refused, left alone.
        let file = try TempFile.make(bytes: [1, 2, 3])
        #expect(throws: APIServerError.self) { _ = try APIServer.start(path: file, router: APIRouter(controller: host.controller()), on: host.loop) }
        #expect(try TempFile.read(file).utf8.count == 3)
    }

    @Test func keepAliveServesManyRequestsOnOneConnection() throws {
        defer { server.shutdown() }
        let client = try Client(path)
        for _ in 0..<20 {
            let response = try client.request("GET", "/")
            #expect(response.status == 200)
            #expect(response.body.contains("\"Not started\""))
        }
        let put = try client.request("PUT", "/machine-config", #"{"vcpu_count": 3, "mem_size_mib": 64}"#)
        #expect(put.status == 204)
        #expect(put.body.isEmpty)
        #expect(try client.request("GET", "/machine-config").body.contains("\"vcpu_count\":3"))
    }

    @Test func severalClientsAtOnce() async throws {
        defer { server.shutdown() }
        let path = path
        try await withThrowingTaskGroup(of: Int.self) { group in
            for index in 0..<8 {
                group.addTask {
                    let client = try Client(path)
                    var ok = 0
                    for round in 0..<10 {
                        let body = #"{"vcpu_count": \#(1 + (index + round) % 4), "mem_size_mib": 64}"#
                        if try client.request("PUT", "/machine-config", body).status == 204 { ok += 1 }
                        if try client.request("GET", "/vcpus").status == 200 { ok += 1 }
                    }
                    return ok
                }
            }
            var total = 0
            for try await ok in group { total += ok }
            #expect(total == 160)
        }
    }

    @Test func oversizeBodiesAreRefusedAndTheServerGoesOn() throws {
        defer { server.shutdown() }
        let big = "{\"kernel_image_path\": \"" + String(repeating: "a", count: 2000) + "\"}"
        let response = try Client(path).request("PUT", "/boot-source", big)
        #expect(response.status == 400)
        #expect(response.body.contains("is larger than the limit of 1024 allowed by server"))
        #expect(try Client(path).request("GET", "/vm/config").body.contains("boot-source") == false)
        // A body without Content-Length (chunked) is held to the same limit.
        let chunked = try Client(path).raw("PUT /boot-source HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            + String(2000, radix: 16) + "\r\n" + String(repeating: "a", count: 2000) + "\r\n0\r\n\r\n")
        #expect(chunked.hasPrefix("HTTP/1.1 400"))
        #expect(try Client(path).request("GET", "/").status == 200)
    }

    @Test func clientsThatHangUpOrSpeakGarbageDisturbNothing() throws {
        defer { server.shutdown() }
        // Hangs up half-way through a body.
        let quitter = try Client(path)
        quitter.send("PUT /machine-config HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"vcpu_count\": 7")
        quitter.close()
        // Hangs up before reading its answer.
        let impatient = try Client(path)
        impatient.send("GET /vcpus HTTP/1.1\r\nHost: x\r\n\r\n")
        impatient.close()
        // Not HTTP at all.
        let garbage = try Client(path).raw("\u{01}\u{02}hello there\r\n\r\n")
        #expect(garbage.isEmpty || garbage.hasPrefix("HTTP/1.1 400"))
        // The half-sent configuration was not applied, and the server still answers.
        let config = try Client(path).request("GET", "/machine-config")
        #expect(config.status == 200)
        #expect(config.body.contains("\"vcpu_count\":1"))
    }

    @Test func errorsCarryFirecrackersFaultBody() throws {
        defer { server.shutdown() }
        let response = try Client(path).request("GET", "/nope")
        #expect(response.status == 400)
        #expect(response.headers.lowercased().contains("content-type: application/json"))
        #expect(response.body == #"{"fault_message":"Invalid request method and/or path: GET /nope."}"#)
    }
}

