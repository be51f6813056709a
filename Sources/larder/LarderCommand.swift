// The `larder` command line: memcached's flags, a config file and LARDER_* environment
// variables, merged with flag > environment > file > default precedence.
import ArgumentParser
import LarderServer
import Logging
#if canImport(Glibc)
import Glibc
#endif

struct LarderCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "larder",
        abstract: "An in-memory cache server that speaks the memcached text protocol.",
        discussion: """
        Every setting can also come from the environment (LARDER_PORT, LARDER_LISTEN, \
        LARDER_MEMORY_LIMIT, ...) or a YAML file given with --config (see Config/larder.yml). \
        A flag wins over the environment, which wins over the file.
        """,
        version: larderVersion
    )

    @Option(name: [.customShort("p"), .customLong("port")], help: "TCP port to listen on (default 11211; 0 picks a free one).")
    var port: String?

    @Option(name: [.customShort("l"), .customLong("listen")], help: "Address to listen on (default 127.0.0.1).")
    var listen: String?

    @Option(name: [.customShort("m"), .customLong("memory-limit")], help: "Memory for items, in megabytes (default 64).")
    var memoryLimit: String?

    @Option(name: [.customShort("c"), .customLong("conn-limit")], help: "Most simultaneous connections (default 1024).")
    var connLimit: String?

    @Option(name: [.customShort("t"), .customLong("threads")], help: "Worker threads (default: number of cores).")
    var threads: String?

    @Option(name: [.customShort("I"), .customLong("max-item-size")], help: "Largest item, bytes or with k/m suffix (default 1m).")
    var maxItemSize: String?

    @Flag(name: [.customShort("M"), .customLong("disable-evictions")], help: "Return an error when memory is full instead of evicting.")
    var disableEvictions = false

    @Flag(name: [.customShort("A"), .customLong("enable-shutdown")], help: "Allow the shutdown command.")
    var enableShutdown = false

    @Flag(name: [.customShort("v"), .customLong("verbose")], help: "More logging (repeat for more).")
    var verbose: Int

    @Option(name: .customLong("shards"), help: "Store shards, a power of two (default 64).")
    var shards: String?

    @Option(name: .customLong("metrics-port"), help: "Port of the Prometheus /metrics endpoint; 0 disables it (default 9150).")
    var metricsPort: String?

    @Option(name: .customLong("config"), help: "YAML configuration file.")
    var config: String?

    @Option(name: [.customShort("u"), .customLong("user")], help: "User to run as (required when started as root; privileges are dropped after binding).")
    var user: String?

    @Option(name: .customLong("idle-timeout"), help: "Close connections idle this many seconds (default 0: never).")
    var idleTimeout: String?

    @Option(name: .customLong("client-memory"), help: "Memory all client connections together may hold, MB; the connections holding the most are closed beyond it; 0 = no limit (default 64).")
    var clientMemory: String?

    @Option(name: .customLong("output-timeout"), help: "Close a connection whose replies sat at the 4 MB output limit this many seconds unread; 0 = never (default 30).")
    var outputTimeout: String?

    func run() throws {
        var flags: [(String, String)] = []
        func add(_ name: String, _ v: String?) { if let v { flags.append((name, v)) } }
        add("port", port)
        add("listen", listen)
        add("memory-limit", memoryLimit)
        add("conn-limit", connLimit)
        add("threads", threads)
        add("max-item-size", maxItemSize)
        add("shards", shards)
        add("metrics-port", metricsPort)
        add("user", user)
        add("idle-timeout", idleTimeout)
        add("client-memory", clientMemory)
        add("output-timeout", outputTimeout)
        if disableEvictions { flags.append(("disable-eviction", "true")) }
        if enableShutdown { flags.append(("enable-shutdown", "true")) }
        if verbose > 0 { flags.append(("verbose", "\(min(verbose, 3))")) }

        let cfg: ServerConfig
        do {
            cfg = try ServerConfig.resolve(file: config, environment: currentEnvironment(), flags: flags)
        } catch {
            printError("larder: \(error)")
            throw ExitCode(64)
        }
        if geteuid() == 0 && cfg.user == nil {
            printError("larder: can't run as root without the -u switch (e.g. -u nobody); like memcached, Larder will not serve as root")
            throw ExitCode(64)
        }
        let level: Logger.Level = cfg.verbosity >= 2 ? .debug : (cfg.verbosity == 1 ? .info : .notice)
        LoggingSystem.bootstrap { label in
            var h = StreamLogHandler.standardError(label: label)
            h.logLevel = level
            return h
        }
        let logger = Logger(label: "larder")
        let server: Server
        do {
            server = try Server(config: cfg, logger: logger)
        } catch {
            printError("larder: \(error)")
            throw ExitCode(71)
        }
        server.run()
    }
}

func currentEnvironment() -> [String: String] {
    var env: [String: String] = [:]
    var p = environ
    while let entry = p.pointee {
        let s = String(cString: entry)
        if let eq = s.firstIndex(of: "=") {
            env[String(s[..<eq])] = String(s[s.index(after: eq)...])
        }
        p += 1
    }
    return env
}

func printError(_ s: String) {
    let line = s + "\n"
    _ = line.withCString { write(2, $0, strlen($0)) }
}
