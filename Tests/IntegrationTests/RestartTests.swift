// The memory file through the real binary (and, under scripts/sanitize, the sanitized one):
// SIGUSR1 then a restart, and SIGKILL then a restart, on the same file. The Python suite
// (tests/python/test_restart.py) adds concurrent writers and damaged files.
import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

@Suite("warm restart (-e)")
struct WarmRestartTests {
    @Test("SIGUSR1 and SIGKILL: the next start serves the same items, deleted ones stay gone")
    func restartKeepsItems() throws {
        let path = "/dev/shm/larder-itest-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        defer { unlink(path) }
        var s = try ServerProcess.larder(["-t", "2", "-e", path])
        var c = try TestClient(port: s.port)
        for i in 0..<200 {
            #expect(try c.request("set k\(i) \(i) 0 5\r\nv\(String(format: "%04d", i))\r\n") == "STORED\r\n")
        }
        #expect(try c.request("delete k7\r\n") == "DELETED\r\n")
        let before = try c.request("gets k1 k2 k150\r\n", until: "END\r\n")
        kill(s.process.processIdentifier, SIGUSR1)
        s.process.waitUntilExit()
        #expect(s.process.terminationStatus == 0)
        for signal in [SIGKILL, SIGUSR1] {
            s = try ServerProcess.larder(["-t", "2", "-e", path])
            #expect(s.stderrText.contains("restored 199 items"), "\(s.stderrText)")
            c = try TestClient(port: s.port)
            #expect(try c.request("gets k1 k2 k150\r\n", until: "END\r\n") == before)
            #expect(try c.request("get k7\r\n") == "END\r\n")
            #expect(try c.request("stats\r\n", until: "END\r\n").contains("STAT restored_items 199\r\n"))
            kill(s.process.processIdentifier, signal)
            s.process.waitUntilExit()
        }
        s = try ServerProcess.larder(["-t", "2", "-e", path, "-m", "32"])
        #expect(s.stderrText.contains("starting empty (incompatible_settings)"), "\(s.stderrText)")
        #expect(s.stop() == 0)
    }
}
