// Prometheus text exposition format 0.0.4: HELP and TYPE lines, samples with escaped label
// values, histograms with cumulative buckets. A small writer, so the page can be rendered from
// the workers' counters at scrape time.

public struct PrometheusText {
    public private(set) var text = ""

    public init() { text.reserveCapacity(16 * 1024) }

    public enum Kind: String, Sendable { case counter, gauge, histogram }

    /// Starts a metric family.
    public mutating func family(_ name: String, _ kind: Kind, _ help: String) {
        text += "# HELP \(name) \(escapeHelp(help))\n# TYPE \(name) \(kind.rawValue)\n"
    }

    /// One sample.
    public mutating func sample(_ name: String, _ labels: [(String, String)] = [], _ value: Double) {
        text += name
        if !labels.isEmpty {
            text += "{" + labels.map { "\($0.0)=\"\(escapeLabel($0.1))\"" }.joined(separator: ",") + "}"
        }
        text += " " + format(value) + "\n"
    }

    public mutating func sample(_ name: String, _ labels: [(String, String)] = [], _ value: UInt64) {
        sample(name, labels, Double(value))
    }

    /// A histogram's samples from non-cumulative bucket counts (the last is +Inf).
    public mutating func histogram(_ name: String, _ labels: [(String, String)], bounds: [Double],
                                   buckets: [UInt64], sum: Double) {
        var cumulative: UInt64 = 0
        for (i, b) in bounds.enumerated() {
            cumulative &+= buckets[i]
            sample(name + "_bucket", labels + [("le", format(b))], cumulative)
        }
        cumulative &+= buckets[bounds.count]
        sample(name + "_bucket", labels + [("le", "+Inf")], cumulative)
        sample(name + "_sum", labels, sum)
        sample(name + "_count", labels, cumulative)
    }

    func escapeLabel(_ s: String) -> String {
        var out = ""
        for c in s {
            switch c {
            case "\\": out += "\\\\"
            case "\"": out += "\\\""
            case "\n": out += "\\n"
            default: out.append(c)
            }
        }
        return out
    }

    func escapeHelp(_ s: String) -> String {
        s.replacingBackslashes()
    }

    /// Integers without a fraction; other values in plain decimal.
    public func format(_ v: Double) -> String {
        if v.isNaN { return "NaN" }
        if v.isInfinite { return v > 0 ? "+Inf" : "-Inf" }
        if v == v.rounded() && abs(v) < 1e15 { return String(Int64(v)) }
        return "\(v)"
    }
}

extension String {
    func replacingBackslashes() -> String {
        var out = ""
        for c in self {
            if c == "\\" { out += "\\\\" } else if c == "\n" { out += "\\n" } else { out.append(c) }
        }
        return out
    }
}
