// The store's side of memcached's meta commands: mg with vivify-on-miss (N), touch (T) and
// recache (R); ms with modes, cas, invalidation (I) and binary keys; md with cas and
// invalidation; ma with cas, vivify and touch; and me's read-only look at an item. The
// per-item meta state lives in free bits of the record's control byte (ItemRecord.swift):
// stale (X), win token sent (W/Z), key stored as binary (b). It adds no byte to a record.
//
// EXACTLY-ONCE: a `W` is handed to one client per miss, invalidation or recache window. That
// decision and the token-sent bit it sets are made under the shard's WRITE lock; a plain
// `mg` reads under the shared lock and, when it meets a stale item whose token is still
// unsent, lets go and redoes the lookup under the write lock, where only the first client
// finds the token unsent. Readers never write bits 4-6 (their relaxed stores of the
// frequency byte happen only under the shared lock, which excludes every writer, so they
// store back the meta bits they loaded unchanged).

/// What an `mg` found out, handed to its callback with the item (under the shard's lock).
public struct MetaGetState {
    /// The item was created by this request (vivify on miss).
    public var created = false
    /// Absolute exptime before a `T` of this request (0: none). For a created item, 0.
    public var exptimeBefore: Int64 = 0
    /// Absolute exptime a `T` set (valid when `T` was given).
    public var touchDeadline: Int64 = 0
    /// Absolute exptime an `N` set on a created item.
    public var vivifyDeadline: Int64 = 0
    /// The item had been fetched before this request (`h`).
    public var fetchedBefore = false
    /// Seconds since the item was last accessed, as far as Larder knows (`l`): the age of
    /// the segment holding it (docs/PROTOCOL.md; Larder keeps no per-item access time).
    public var lastAccessAge: Int64 = 0
    /// A win token had already been sent (`Z`).
    public var tokenSentBefore = false
    /// The item is stale (`X`).
    public var stale = false
    /// This client won the token (`W`).
    public var won = false
    /// The key was stored base64-binary.
    public var binaryKey = false
}

/// Options of an `mg` that change the item.
public struct MetaGetOptions: Sendable {
    /// `N`: create an empty item on a miss, with this exptime.
    public var vivifyTTL: Int32?
    /// `T`: set this exptime.
    public var touchTTL: Int32?
    /// `R`: win the token when the remaining TTL is under this.
    public var recacheTTL: Int32?
    /// `R` comes after `T` in the request (so it compares against the new exptime).
    public var recacheAfterTouch = false
    /// `u`: do not count this as an access.
    public var noUpdate = false

    public init(vivifyTTL: Int32? = nil, touchTTL: Int32? = nil, recacheTTL: Int32? = nil,
                recacheAfterTouch: Bool = false, noUpdate: Bool = false) {
        self.vivifyTTL = vivifyTTL
        self.touchTTL = touchTTL
        self.recacheTTL = recacheTTL
        self.recacheAfterTouch = recacheAfterTouch
        self.noUpdate = noUpdate
    }

    var needsWriteLock: Bool { vivifyTTL != nil || touchTTL != nil || recacheTTL != nil }
}

/// The storage mode of an `ms` (memcached's NREAD_* after the mode switch and cas upgrade).
public enum MetaStoreMode: Sendable {
    case set, add, replace, append, prepend, cas
}

/// Result of `ms`: the outcome and, when stored, the new item's cas (0 otherwise).
public struct MetaStoreResult: Sendable, Equatable {
    public var outcome: StoreOutcome
    public var cas: UInt64
}

/// Result of `md`.
public enum MetaDeleteOutcome: Sendable, Equatable {
    case deleted, notFound, exists, invalidated
}

/// Result of `ma`.
public enum MetaArithmeticOutcome: Sendable, Equatable {
    /// The new value, the item's cas, its exptime before this request's T/N and the
    /// deadlines T and N set; `created` when vivified.
    case value(UInt64, cas: UInt64, exptimeBefore: Int64, touchDeadline: Int64, vivifyDeadline: Int64, created: Bool)
    case notFound, exists, nonNumeric, outOfMemory
}

/// What `me` shows of an item.
public struct MetaDebugInfo: Sendable, Equatable {
    public var exptime: Int64
    public var lastAccessAge: Int64
    public var cas: UInt64
    public var fetched: Bool
    /// memcached's ITEM_ntotal for the same item.
    public var size: Int
    public var binaryKey: Bool
}

extension Store {
    // MARK: - mg

    /// `mg`. Calls `body` with the item and its meta state under the shard lock (copy what you
    /// need), and returns `.hit` (item found or created), `.miss` or `.expired`.
    public func metaGet(_ key: UnsafeRawBufferPointer, options: MetaGetOptions,
                        _ body: (borrowing FoundItem, MetaGetState) -> Void) -> ReadStatus {
        let t = now()
        let h = hash(key)
        let s = shard(for: h)
        if !options.needsWriteLock {
            // Shared lock first; fall through to the write lock only for a stale item whose
            // token nobody has been sent yet (that decision must be made exactly once).
            var needsWrite = false
            let status: ReadStatus = s.lock.withReadLock {
                guard let (slot, r) = s.findLocked(key, hash: h) else { return .miss }
                if Store.expired(r, now: t) { return .expired }
                let c = r.control.load(ordering: .relaxed)
                if c & RecordControl.stale != 0 && c & RecordControl.tokenSent == 0 {
                    needsWrite = true
                    return .miss
                }
                var state = MetaGetState()
                state.lastAccessAge = s.accessAgeLocked(slot: slot, now: t)
                state.exptimeBefore = r.exptime
                state.fetchedBefore = c & RecordControl.fetched != 0
                state.tokenSentBefore = c & RecordControl.tokenSent != 0
                state.stale = c & RecordControl.stale != 0
                state.binaryKey = c & RecordControl.binaryKey != 0
                if !options.noUpdate { r.noteRead() }
                body(FoundItem(r), state)
                return .hit
            }
            if !needsWrite {
                if status == .expired { removeIfExpired(key, hash: h, shard: s, now: t) }
                return status
            }
        }
        return s.lock.withWriteLock {
            var status = ReadStatus.miss
            let lookup = s.findLiveLocked(key, hash: h, now: t)
            let found = lookup.found
            if case .expired = lookup { status = .expired }
            var state = MetaGetState()
            guard var (slot, r) = found else {
                guard let n = options.vivifyTTL else { return status }
                // Vivify: an empty item; this client is the one told to recache it.
                let deadline = absoluteExpiry(n, now: t)
                let empty = UnsafeRawBufferPointer(start: nil, count: 0)
                guard s.putLocked(key, hash: h, flags: 0, deadline: deadline, cas: 0, control: RecordControl.tokenSent,
                                  valueCount: 0, parts: (empty, empty), large: nil, now: t),
                      let (_, created) = s.findLocked(key, hash: h) else { return status }
                state.created = true
                state.vivifyDeadline = deadline
                state.won = true
                if !options.noUpdate { created.noteRead() }
                body(FoundItem(created), state)
                return .hit
            }
            let c = r.control.load(ordering: .relaxed)
            state.lastAccessAge = s.accessAgeLocked(slot: slot, now: t)
            state.exptimeBefore = r.exptime
            state.fetchedBefore = c & RecordControl.fetched != 0
            state.tokenSentBefore = c & RecordControl.tokenSent != 0
            state.stale = c & RecordControl.stale != 0
            state.binaryKey = c & RecordControl.binaryKey != 0
            if let ttl = options.touchTTL {
                let d = absoluteExpiry(ttl, now: t)
                state.touchDeadline = d
                guard let moved = s.touchLocked(key, hash: h, slot: slot, record: r, deadline: d, now: t) else {
                    return .miss
                }
                r = moved
                if let again = s.findLocked(key, hash: h) { slot = again.slot }
            }
            if let rt = options.recacheTTL, !state.tokenSentBefore {
                let e = options.recacheAfterTouch && options.touchTTL != nil ? state.touchDeadline : state.exptimeBefore
                if e != 0 && e < absoluteExpiry(rt, now: t) { state.won = true }
            }
            if state.stale && !state.tokenSentBefore { state.won = true }
            if state.won { r.updateControlLocked(set: RecordControl.tokenSent, clear: 0) }
            if !options.noUpdate { r.noteRead() }
            body(FoundItem(r), state)
            return .hit
        }
    }

    // MARK: - ms

    /// `ms`: stores `value` under `key` in `mode`. With `invalidate` and mode `.cas`, a cas
    /// older than the item's still stores, and the new item is marked stale (memcached's
    /// set-stale). append/prepend with a nonzero `cas` store only if it matches. A failure to
    /// find memory unlinks the old item in every mode, as memcached's ms does.
    public func metaStore(_ mode: MetaStoreMode, key: UnsafeRawBufferPointer, flags: UInt32, exptime: Int32,
                          value: UnsafeRawBufferPointer, cas: UInt64, invalidate: Bool,
                          binaryKey: Bool) -> MetaStoreResult {
        let t = now()
        let h = hash(key)
        let s = shard(for: h)
        let deadline = absoluteExpiry(exptime, now: t)
        let empty = UnsafeRawBufferPointer(start: nil, count: 0)
        var large: LargeValue? = nil
        if mode != .append && mode != .prepend && value.count > geometry.inlineLimit {
            large = LargeValue(capacity: value.count, filling: (value, empty))
        }
        let keyBit = binaryKey ? RecordControl.binaryKey : 0
        return s.lock.withWriteLock {
            let found = s.findLiveLocked(key, hash: h, now: t).found
            var control = keyBit
            switch mode {
            case .set:
                break
            case .add:
                if let (_, r) = found {
                    r.noteUse()
                    return MetaStoreResult(outcome: .notStored, cas: 0)
                }
            case .replace:
                if found == nil { return MetaStoreResult(outcome: .notStored, cas: 0) }
            case .cas:
                guard let (_, r) = found else { return MetaStoreResult(outcome: .notFound, cas: 0) }
                if r.cas != cas {
                    guard invalidate && cas < r.cas else { return MetaStoreResult(outcome: .exists, cas: 0) }
                    control |= RecordControl.stale
                }
            case .append, .prepend:
                guard let (_, old) = found else { return MetaStoreResult(outcome: .notStored, cas: 0) }
                if cas != 0 && old.cas != cas { return MetaStoreResult(outcome: .exists, cas: 0) }
                let o = s.concatenateLocked(key, hash: h, old: old, with: value, append: mode == .append,
                                            maxItemSize: config.maxItemSize, now: t)
                if o == .outOfMemory, let (slot, r) = s.findLocked(key, hash: h) { s.removeLocked(slot: slot, record: r) }
                let newCas = o == .stored ? (s.findLocked(key, hash: h)?.record.cas ?? 0) : 0
                return MetaStoreResult(outcome: o, cas: newCas)
            }
            if s.putLocked(key, hash: h, flags: flags, deadline: deadline, cas: 0, control: control,
                           valueCount: value.count, parts: (value, empty), large: large, now: t) {
                return MetaStoreResult(outcome: .stored, cas: s.findLocked(key, hash: h)?.record.cas ?? 0)
            }
            if let (slot, r) = s.findLocked(key, hash: h) { s.removeLocked(slot: slot, record: r) }
            return MetaStoreResult(outcome: .outOfMemory, cas: 0)
        }
    }

    /// Unlinks `key` after an `ms` too large for `-I` (memcached does, in every mode).
    public func metaUnlink(_ key: UnsafeRawBufferPointer) {
        _ = delete(key)
    }

    // MARK: - md

    /// `md`: deletes, or with `invalidate` marks the item stale (new cas, token reset, and a
    /// new exptime when `ttl` is given). A nonzero-or-given `cas` must match.
    public func metaDelete(_ key: UnsafeRawBufferPointer, cas: UInt64?, invalidate: Bool, ttl: Int32?) -> MetaDeleteOutcome {
        let t = now()
        let h = hash(key)
        let s = shard(for: h)
        return s.lock.withWriteLock {
            guard case .live(var slot, var r) = s.findLiveLocked(key, hash: h, now: t) else { return .notFound }
            if let c = cas, r.cas != c { return .exists }
            if !invalidate {
                s.removeLocked(slot: slot, record: r)
                return .deleted
            }
            if let ttl {
                guard let moved = s.touchLocked(key, hash: h, slot: slot, record: r,
                                                deadline: absoluteExpiry(ttl, now: t), now: t) else { return .notFound }
                r = moved
                if let again = s.findLocked(key, hash: h) { slot = again.slot }
            }
            r.updateControlLocked(set: RecordControl.stale, clear: RecordControl.tokenSent)
            r.setCas(s.nextCasLocked())
            return .invalidated
        }
    }

    // MARK: - ma

    /// `ma`: incr/decr with memcached's rules, a cas check (0 means none), vivify with
    /// `initial` on a miss when `vivifyTTL` is given, and `touchTTL`. When both T and N
    /// apply to a created item, the one later in the request wins (`touchAfterVivify`).
    public func metaArithmetic(_ key: UnsafeRawBufferPointer, incr: Bool, delta: UInt64, cas: UInt64,
                               initial: UInt64, vivifyTTL: Int32?, touchTTL: Int32?,
                               touchAfterVivify: Bool) -> MetaArithmeticOutcome {
        let t = now()
        let h = hash(key)
        let s = shard(for: h)
        return s.lock.withWriteLock {
            let found = s.findLiveLocked(key, hash: h, now: t).found
            let touchDeadline = touchTTL.map { absoluteExpiry($0, now: t) } ?? 0
            var created = false
            var result: UInt64
            var exptimeBefore: Int64 = 0
            var flags: UInt32 = 0
            if let (_, old) = found {
                if cas != 0 && old.cas != cas { return .exists }
                let item = FoundItem(old)
                guard let current = item.withValue({ parseStoredNumber($0) }) else { return .nonNumeric }
                result = incr ? current &+ delta : (delta > current ? 0 : current - delta)
                exptimeBefore = item.exptime
                flags = item.flags
            } else {
                guard vivifyTTL != nil else { return .notFound }
                result = initial
                created = true
            }
            let vivifyDeadline = created ? absoluteExpiry(vivifyTTL ?? 0, now: t) : 0
            var deadline = exptimeBefore
            if created { deadline = vivifyDeadline }
            if touchTTL != nil && (!created || touchAfterVivify) { deadline = touchDeadline }
            var digits: (UInt64, UInt64, UInt64) = (0, 0, 0)
            let text: [UInt8] = withUnsafeMutableBytes(of: &digits) { sb in
                let n = writeDecimal(result, into: sb)
                // memcached writes a shorter result in place, padded with spaces; a new item
                // (vivified) is exactly the digits.
                let width = created ? n : max(n, found.map { FoundItem($0.record).valueCount } ?? n)
                var out = [UInt8](repeating: 0x20, count: width)
                for i in 0..<n { out[i] = sb[24 - n + i] }
                return out
            }
            let empty = UnsafeRawBufferPointer(start: nil, count: 0)
            let ok: Bool = text.withUnsafeBytes { tb in
                let large = tb.count > s.geometry.inlineLimit ? LargeValue(capacity: tb.count, filling: (tb, empty)) : nil
                return s.putLocked(key, hash: h, flags: flags, deadline: deadline, cas: 0, control: 0,
                                   valueCount: tb.count, parts: large == nil ? (tb, empty) : (empty, empty),
                                   large: large, now: t,
                                   newItem: created || tb.count != found.map { FoundItem($0.record).valueCount })
            }
            guard ok, let (_, r) = s.findLocked(key, hash: h) else { return .outOfMemory }
            return .value(result, cas: r.cas, exptimeBefore: exptimeBefore, touchDeadline: touchDeadline,
                          vivifyDeadline: vivifyDeadline, created: created)
        }
    }

    // MARK: - me

    /// `me`: a look at an item without counting it as an access. nil when absent or expired.
    public func metaDebug(_ key: UnsafeRawBufferPointer) -> MetaDebugInfo? {
        let t = now()
        let h = hash(key)
        let s = shard(for: h)
        return s.lock.withReadLock {
            guard let (slot, r) = s.findLocked(key, hash: h), !Store.expired(r, now: t) else { return nil }
            let item = FoundItem(r)
            let c = r.control.load(ordering: .relaxed)
            return MetaDebugInfo(exptime: item.exptime, lastAccessAge: s.accessAgeLocked(slot: slot, now: t), cas: item.cas,
                                 fetched: c & RecordControl.fetched != 0,
                                 size: StoreConfig.itemTotalSize(keyCount: key.count, flags: item.flags,
                                                                 valueCount: item.valueCount),
                                 binaryKey: c & RecordControl.binaryKey != 0)
        }
    }
}

// MARK: - Admin

/// Called with an evicted item's key, whether it had been fetched, and its exptime, under the
/// shard's write lock: it must not block or call back into the store.
public typealias EvictionObserver = @Sendable (_ key: UnsafeRawBufferPointer, _ fetched: Bool, _ exptime: Int64) -> Void

extension Store {
    /// Installs (or removes) the eviction observer on every shard.
    public func setEvictionObserver(_ o: EvictionObserver?) {
        for s in shardsForAdmin { s.lock.withWriteLock { s.evictionObserver = o } }
    }

    /// The memory limit now in force (`-m`, or the last `cache_memlimit`).
    public var memoryLimit: Int {
        shardsForAdmin.reduce(0) { total, s in total + s.lock.withReadLock { s.limit } }
    }

    /// `cache_memlimit`: sets the limit to `bytes`, evicting (one shard at a time) until each
    /// shard fits its new share. A shard's segments are mapped once at start, so the limit can
    /// be raised back up to the starting `-m` but not beyond; false then.
    public func setMemoryLimit(_ bytes: Int) -> Bool {
        let perShard = bytes / shardCount
        guard perShard <= config.memoryLimit / shardCount else { return false }
        let t = now()
        for s in shardsForAdmin {
            s.lock.withWriteLock {
                s.limit = perShard
                _ = s.makeRoomLocked(bytes: 0, now: t)
            }
        }
        return true
    }

    /// One live item as `stats cachedump` and `lru_crawler metadump` show it.
    public struct DumpedItem: Sendable {
        public var key: [UInt8]
        public var valueCount: Int
        public var exptime: Int64
        public var cas: UInt64
        public var fetched: Bool
        public var size: Int
        /// Seconds since the item's segment was opened (see `MetaGetState.lastAccessAge`).
        public var accessAge: Int64
    }

    /// Visits live, unexpired items one shard at a time (read lock), at most `limit` (0: all);
    /// `body` returns false to stop.
    public func dumpItems(limit: Int = 0, _ body: (DumpedItem) -> Bool) {
        let t = now()
        var n = 0
        for s in shardsForAdmin {
            var batch: [DumpedItem] = []
            s.lock.withReadLock {
                for i in 0..<s.capacity {
                    let e = s.slots[i]
                    guard e > Shard.tombstone, !s.isStale(e) else { continue }
                    let r = s.record(of: e)
                    if Store.expired(r, now: t) { continue }
                    let item = FoundItem(r)
                    batch.append(DumpedItem(key: Array(r.key), valueCount: item.valueCount, exptime: item.exptime,
                                            cas: item.cas, fetched: r.wasFetched,
                                            size: StoreConfig.itemTotalSize(keyCount: r.keyCount, flags: item.flags,
                                                                            valueCount: item.valueCount),
                                            accessAge: s.accessAgeLocked(slot: i, now: t)))
                }
            }
            // The caller's work (formatting, writing) runs outside the lock.
            for d in batch {
                if limit > 0 && n >= limit { return }
                n += 1
                if !body(d) { return }
            }
        }
    }
}
