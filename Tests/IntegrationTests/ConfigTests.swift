// Configuration precedence and refusal of bad settings, through the real binary: the config
// file in both formats (larder.conf, one flag per line; the deprecated `setting: value` lines
// of Config/larder.yml), --help and --version.
import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

@Suite("configuration")
struct ConfigTests {
    func writeConfig(_ text: String) throws -> String {
        let path = NSTemporaryDirectory() + "larder-test-\(getpid())-\(UInt32.random(in: 0...UInt32.max)).yml"
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    @Test("flag beats environment beats file beats default", arguments: [
        "# test\n--memory-limit 32\n-t 1   # one thread\n\n-c77\n",
        "# test (the deprecated format)\nmemory-limit: 32\nthreads: 1\nconn-limit: 77\n",
    ])
    func precedence(text: String) throws {
        let file = try writeConfig(text)
        defer { unlink(file) }
        func limit(_ args: [String], env: [String: String]) throws -> (String?, String?, String?) {
            let s = try ServerProcess.larder(args, env: env)
            defer { s.stop() }
            let st = try stats(port: s.port)
            return (st["limit_maxbytes"], st["threads"], st["max_connections"])
        }
        let mb = 1024 * 1024
        #expect(try limit(["--config", file], env: [:]) == ("\(32 * mb)", "1", "77"))
        #expect(try limit(["--config", file], env: ["LARDER_MEMORY_LIMIT": "48"]) == ("\(48 * mb)", "1", "77"))
        #expect(try limit(["--config", file, "-m", "16"], env: ["LARDER_MEMORY_LIMIT": "48"]) == ("\(16 * mb)", "1", "77"))
        #expect(try limit(["-t", "2"], env: ["LARDER_CONFIG": file]) == ("\(32 * mb)", "2", "77"))
        #expect(try limit(["-t", "1"], env: [:]) == ("\(64 * mb)", "1", "1024"))
    }

    @Test("a bad setting is refused at start, naming the setting", arguments: [
        (["-m", "lots"], [String: String](), "memory-limit"),
        (["-p", "70000"], [:], "port"),
        (["-l", "localhost-ish"], [:], "listen"),
        (["-I", "1x"], [:], "max-item-size"),
        ([], ["LARDER_THREADS": "0"], "LARDER_THREADS"),
        (["--shards", "3"], [:], "shards"),
        (["-I", "9999999999999m"], [:], "max-item-size"),
        (["-m", "99999999999999999"], [:], "memory-limit"),
        (["-m", "1", "-I", "1m"], [:], "max-item-size"),
        (["--config", "/tmp"], [:], "config"),
        (["--client-memory", "-1"], [:], "client-memory"),
        (["--output-timeout", "soon"], [:], "output-timeout"),
    ])
    func badSetting(args: [String], env: [String: String], mentions: String) throws {
        let (status, text) = try runLarderExpectingExit(args, env: env)
        #expect(status == 64)  // EX_USAGE, for every refused setting
        #expect(text.contains(mentions), "stderr was: \(text)")
    }

    @Test("a bad config file is refused naming the setting")
    func badFile() throws {
        let file = try writeConfig("threads: many\n")
        defer { unlink(file) }
        let (status, text) = try runLarderExpectingExit(["--config", file])
        #expect(status == 64)
        #expect(text.contains("threads") && text.contains(file))
    }

    @Test("config file entries that are repeated, unknown, nested, or a directory as the file, are refused with the line",
          arguments: [
        ("threads: 1\nport: 0\nthreads: 2\n", "set twice (first on line 1)", "line 3"),
        ("# c\nmemory-limt: 64\n", "unknown setting", "line 2"),
        ("listen:\n  - 127.0.0.1\n", "expected", "line 1"),
        ("just words\n", "expected 'setting: value'", "line 1"),
    ])
    func badFileShapes(text: String, message: String, line: String) throws {
        let file = try writeConfig(text)
        defer { unlink(file) }
        let (status, out) = try runLarderExpectingExit(["--config", file])
        #expect(status == 64)
        #expect(out.contains(message) && out.contains(line), "stderr was: \(out)")
    }

    @Test("larder.conf entries that are repeated, unknown, bad, or not one flag are refused with file, line and setting",
          arguments: [
        ("-t 1\n-p 0\n--threads=2\n", "threads", "set twice (first on line 1)", "line 3"),
        ("# c\n\n--memory-limt 64\n", "--memory-limt", "unknown flag", "line 3"),
        ("-m 64\n-t lots\n", "threads", "'lots' is not a whole number", "line 2"),
        ("-p 0 -t 1\n", "-p", "one flag per line", "line 1"),
        ("-p 0\nthreads: 1\n", "config", "expected one flag per line", "line 2"),
        ("-p 0\n--config /etc/other.conf\n", "--config", "not allowed in a config file", "line 2"),
        ("-v\n-p 0\n-vv\n", "verbose", "set twice", "line 3"),
        ("-I\n", "-I", "needs a value", "line 1"),
    ])
    func badConfShapes(text: String, setting: String, message: String, line: String) throws {
        let file = try writeConfig(text)
        defer { unlink(file) }
        let (status, out) = try runLarderExpectingExit(["--config", file])
        #expect(status == 64)
        #expect(out.contains("'\(setting)'") && out.contains(message) && out.contains("\(file), \(line)"), "stderr was: \(out)")
    }

    @Test("the old 'setting: value' format is still read, with a deprecation warning")
    func legacyWarning() throws {
        let file = try writeConfig("threads: 1\nmemory-limit: 1\n")
        defer { unlink(file) }
        // -I 1m over half of -m 1 stops it after the file was read, so the warning is seen.
        let (status, out) = try runLarderExpectingExit(["--config", file, "-I", "1m"])
        #expect(status == 64)
        #expect(out.contains("warning: \(file) is in the old 'setting: value' format"), "stderr was: \(out)")
        #expect(out.contains("max-item-size"), "stderr was: \(out)")
    }

    @Test("the renamed setting disable-eviction is still read under its old name, the new name winning")
    func renamedSetting() throws {
        func evictions(_ env: [String: String], file: String? = nil) throws -> String? {
            let s = try ServerProcess.larder(file.map { ["--config", $0] } ?? [], env: env)
            defer { s.stop() }
            return try stats(port: s.port, group: "settings")["evictions"]
        }
        #expect(try evictions([:]) == "on")
        #expect(try evictions(["LARDER_DISABLE_EVICTIONS": "true"]) == "off")
        #expect(try evictions(["LARDER_DISABLE_EVICTION": "true"]) == "off")
        #expect(try evictions(["LARDER_DISABLE_EVICTION": "true", "LARDER_DISABLE_EVICTIONS": "false"]) == "on")
        let file = try writeConfig("disable-eviction: true\n")
        defer { unlink(file) }
        #expect(try evictions([:], file: file) == "off")
    }

    @Test("an unknown flag or a stray argument on the command line: exit 64")
    func badCommandLine() throws {
        for args in [["--port-number", "1"], ["-x"], ["11211"], ["-p"]] {
            let (status, out) = try runLarderExpectingExit(args)
            #expect(status == 64, "\(args)")
            #expect(out.contains("larder --help"), "stderr was: \(out)")
        }
    }

    @Test("--version names Larder's release and the memcached protocol; --help groups the flags")
    func versionAndHelp() throws {
        let (vStatus, version) = try runLarderCapturingStdout(["--version"])
        #expect(vStatus == 0)
        #expect(version.hasPrefix("larder 0.") && version.contains("memcached text protocol 1.6"), "\(version)")
        let (hStatus, help) = try runLarderCapturingStdout(["-h"])
        #expect(hStatus == 0)
        for g in ["Connection:", "Memory:", "Clients:", "Metrics:", "Debugging:", "-p, --port=<num>", "-V, --version"] {
            #expect(help.contains(g), "\(g)")
        }
    }

    @Test("the shipped Config/larder.conf (the package's /etc/larder/larder.conf) is accepted")
    func shippedConfig() throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent()
        let file = root.appendingPathComponent("Config/larder.conf").path
        let s = try ServerProcess.larder(["--config", file, "-m", "32"])
        defer { s.stop() }
        let st = try stats(port: s.port)
        #expect(st["limit_maxbytes"] == "\(32 * 1024 * 1024)")
        #expect(st["max_connections"] == "1024")
    }

    @Test("a directory given as the config file is refused")
    func directoryAsFile() throws {
        let (status, out) = try runLarderExpectingExit(["--config", NSTemporaryDirectory()])
        #expect(status == 64)
        #expect(out.contains("not a regular file"), "stderr was: \(out)")
    }
}
