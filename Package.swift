// swift-tools-version: 6.1
import PackageDescription

// Layers depend one way, top to bottom:
//   swiftlet -> APISocket -> API -> VMM -> Devices, Hypercalls, Virtio, X86 -> Loader -> GuestMemory;
//   X86, VMM -> KVM -> CKVM;  VMM, Virtio -> EventLoop
let strict: [SwiftSetting] = [.enableUpcomingFeature("ExistentialAny")]

let package = Package(
    name: "Swiftlet",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "swiftlet", targets: ["swiftlet"]),
        .executable(name: "swiftlet-bench", targets: ["SwiftletBench"]),
        .executable(name: "swiftlet-api-bench", targets: ["APIBench"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.0"),
        .package(url: "https://github.com/apple/swift-system", from: "1.8.0"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.0"),
    ],
    targets: [
        .target(name: "CKVM"),
        .target(name: "CSwiftletSystem"),
        .target(name: "KVM", dependencies: [
            "CKVM", .product(name: "SystemPackage", package: "swift-system"),
        ], swiftSettings: strict),
        .target(name: "GuestMemory", dependencies: [
            "CSwiftletSystem",
            .product(name: "SystemPackage", package: "swift-system"),
        ], swiftSettings: strict),
        .target(name: "Loader", dependencies: [
            "GuestMemory", .product(name: "SystemPackage", package: "swift-system"),
        ], swiftSettings: strict),
        // Strict JSON syntax (RFC 8259, positions in errors) for CPU templates, the API and config files.
        .target(name: "JSON", swiftSettings: strict),
        .target(name: "X86", dependencies: ["KVM", "GuestMemory", "Loader", "JSON"], swiftSettings: strict),
        .target(name: "Devices", dependencies: [
            .product(name: "Logging", package: "swift-log"),
        ], swiftSettings: strict),
        .target(name: "Hypercalls", swiftSettings: strict),
        // The VMM's epoll loop (eventfd wake-ups, timers, signals, watched descriptors); the main
        // loop and each virtio device's worker run one.
        .target(name: "EventLoop", dependencies: ["CSwiftletSystem"], swiftSettings: strict),
        // virtio (VIRTIO 1.2): split virtqueues, the virtio-mmio transport, the devices. Pure device
        // logic over GuestMemory, testable without KVM.
        .target(name: "Virtio", dependencies: ["GuestMemory", "EventLoop", "CSwiftletSystem", .product(name: "Logging", package: "swift-log")],
                swiftSettings: strict),
        .target(name: "DemoGuest", swiftSettings: strict),
        // Snapshots (README, Snapshots): the file format and the state records, pure.
        .target(name: "Snapshot", swiftSettings: strict),
        .target(name: "VMM", dependencies: [
            "KVM", "GuestMemory", "Loader", "X86", "Devices", "Hypercalls", "Virtio", "EventLoop", "Snapshot", "CSwiftletSystem",
            .product(name: "Logging", package: "swift-log"),
            .product(name: "SystemPackage", package: "swift-system"),
        ], swiftSettings: strict),
        // The control plane (Firecracker's API): the VM controller, routes and bodies, pure and
        // testable without sockets or KVM. APISocket serves it over HTTP/1.1 on a Unix socket from
        // the VMM's main loop, with SwiftNIO's HTTP/1.1 codec.
        .target(name: "API", dependencies: [
            "VMM", "Loader", "X86", "JSON", "KVM",
            .product(name: "Logging", package: "swift-log"),
        ], swiftSettings: strict),
        .target(name: "APISocket", dependencies: [
            "API", "VMM", "CSwiftletSystem",
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOEmbedded", package: "swift-nio"),
            .product(name: "NIOHTTP1", package: "swift-nio"),
            .product(name: "Logging", package: "swift-log"),
        ], swiftSettings: strict),
        .executableTarget(name: "swiftlet", dependencies: [
            "VMM", "API", "APISocket", "Loader", "DemoGuest",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
            .product(name: "Logging", package: "swift-log"),
        ], swiftSettings: strict),
        // `swift run -c release swiftlet-bench`: Swiftlet against the KVM floor and QEMU microvm.
        .executableTarget(name: "SwiftletBench", swiftSettings: strict),
        // `swiftlet-api-bench`: start-up, round trips, idle memory and pause latency of the API.
        .executableTarget(name: "APIBench", swiftSettings: strict),
        // libFuzzer targets (Fuzz/README.md): `Fuzz/run.sh` builds them with -sanitize=fuzzer; a
        // normal build makes replay drivers. FuzzEngine only declares libFuzzer's driver entry.
        .target(name: "FuzzEngine"),
        .target(name: "FuzzTargets", dependencies: ["FuzzEngine", "Loader", "GuestMemory", "Hypercalls", "API", "VMM", "Virtio", "Snapshot"],
                swiftSettings: strict),
        .executableTarget(name: "FuzzELF", dependencies: ["FuzzTargets"], swiftSettings: strict),
        .executableTarget(name: "FuzzXenNotes", dependencies: ["FuzzTargets"], swiftSettings: strict),
        .executableTarget(name: "FuzzBzImage", dependencies: ["FuzzTargets"], swiftSettings: strict),
        .executableTarget(name: "FuzzHypercalls", dependencies: ["FuzzTargets"], swiftSettings: strict),
        .executableTarget(name: "FuzzAPI", dependencies: ["FuzzTargets"], swiftSettings: strict),
        .executableTarget(name: "FuzzVirtqueue", dependencies: ["FuzzTargets"], swiftSettings: strict),
        .executableTarget(name: "FuzzSnapshot", dependencies: ["FuzzTargets"], swiftSettings: strict),
        .testTarget(name: "GuestMemoryTests", dependencies: ["GuestMemory"]),
        .testTarget(name: "LoaderTests", dependencies: ["Loader", "GuestMemory"]),
        .testTarget(name: "X86Tests", dependencies: ["X86", "GuestMemory", "Loader", "KVM", "JSON"]),
        .testTarget(name: "DevicesTests", dependencies: ["Devices"]),
        .testTarget(name: "HypercallsTests", dependencies: ["Hypercalls"]),
        .testTarget(name: "VirtioTests", dependencies: ["Virtio", "GuestMemory", "EventLoop"]),
        .testTarget(name: "SnapshotTests", dependencies: ["Snapshot"]),
        .testTarget(name: "KVMTests", dependencies: ["KVM", "CKVM", .product(name: "SystemPackage", package: "swift-system")]),
        .testTarget(name: "VMMTests", dependencies: ["VMM", "KVM", "Devices", "Hypercalls"]),
        // Shared by the API and end-to-end tests: a byte-exact HTTP client on a Unix socket.
        .target(name: "TestSupport", path: "Tests/TestSupport"),
        .testTarget(name: "APITests", dependencies: ["API", "APISocket", "VMM", "KVM", "JSON", "TestSupport",
                                                    .product(name: "Logging", package: "swift-log")]),
        .testTarget(name: "SwiftletTests", dependencies: ["Loader", "DemoGuest", "VMM", "KVM", "TestSupport"]),
        .testTarget(name: "FuzzTests", dependencies: ["FuzzTargets", "Loader", "Hypercalls"]),
    ],
    swiftLanguageModes: [.v6]
)
