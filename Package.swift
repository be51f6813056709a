// swift-tools-version:6.0
// Larder: a memcached-protocol cache server. Target layout follows ../shared/DESIGN.md:
// pure protocol and store libraries, a thin libevent network layer, a CLI on top.
import PackageDescription


/// Swift 6 language mode everywhere; in release builds, dynamic exclusivity checks are off
/// for the hot-path modules (they cost ~200 instructions a request in runtime calls; the
/// static checks still run, and debug builds and the test suite keep the dynamic ones).
let hot: [SwiftSetting] = [
    .swiftLanguageMode(.v6),
    .unsafeFlags(["-enforce-exclusivity=unchecked"], .when(configuration: .release)),
]

let package = Package(
    name: "Larder",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "larder", targets: ["larder"]),
        .executable(name: "larder-bench", targets: ["larder-bench"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-atomics", from: "1.3.0"),
        .package(url: "https://github.com/HdrHistogram/hdrhistogram-swift", from: "0.2.0"),
    ],
    targets: [
        .systemLibrary(
            name: "CLibevent",
            pkgConfig: "libevent_pthreads",
            providers: [.apt(["libevent-dev"])]
        ),
        // OpenSSL for TLS (-Z), and libevent's OpenSSL bufferevents for the metrics endpoint.
        .systemLibrary(
            name: "COpenSSL",
            pkgConfig: "openssl",
            providers: [.apt(["libssl-dev", "libevent-dev"])]
        ),
        // crypt(3) for the bcrypt hashes of --metrics-auth-file (libcrypt1 is on every Debian).
        .systemLibrary(name: "CCrypt", providers: [.apt(["libcrypt-dev"])]),
        .target(name: "LarderProtocol", swiftSettings: hot),
        .target(name: "LarderStore", dependencies: [.product(name: "Atomics", package: "swift-atomics")], swiftSettings: hot),
        .target(
            name: "LarderMetrics",
            dependencies: ["LarderProtocol", .product(name: "Atomics", package: "swift-atomics")],
            swiftSettings: hot
        ),
        .target(
            name: "LarderServer",
            dependencies: [
                "CLibevent", "COpenSSL", "CCrypt", "LarderProtocol", "LarderStore", "LarderMetrics",
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: hot
        ),
        .executableTarget(
            name: "larder",
            dependencies: [
                // No swift-argument-parser here: it brings FoundationEssentials into the server
                // (LarderServer's FlagParser reads the flags and the config file instead).
                "LarderServer",
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: [.swiftLanguageMode(.v6)]
        ),
        .target(name: "BenchSupport", swiftSettings: [.swiftLanguageMode(.v6)]),
        .executableTarget(
            name: "larder-bench",
            dependencies: [
                "BenchSupport", "COpenSSL",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Atomics", package: "swift-atomics"),
                .product(name: "Histogram", package: "hdrhistogram-swift"),
            ],
            swiftSettings: [.swiftLanguageMode(.v6)]
        ),
        .executableTarget(
            name: "larder-lru-quality",
            dependencies: ["LarderStore", "BenchSupport"],
            swiftSettings: [.swiftLanguageMode(.v6)]
        ),
        .testTarget(name: "LarderProtocolTests", dependencies: ["LarderProtocol", "BenchSupport"], swiftSettings: [.swiftLanguageMode(.v6)]),
        .testTarget(name: "LarderStoreTests", dependencies: ["LarderStore", "BenchSupport", .product(name: "Atomics", package: "swift-atomics")], swiftSettings: [.swiftLanguageMode(.v6)]),
        .testTarget(name: "LarderMetricsTests", dependencies: ["LarderMetrics", .product(name: "Atomics", package: "swift-atomics")],
                    swiftSettings: [.swiftLanguageMode(.v6)]),
        .testTarget(name: "IntegrationTests", dependencies: ["LarderServer"], swiftSettings: [.swiftLanguageMode(.v6)]),
    ]
)
