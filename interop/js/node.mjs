// A js-libp2p 3 node for msgnet's interop tests: TCP on 127.0.0.1, noise, yamux, identify,
// ping, a length-prefixed echo protocol and, with --dht, kad-dht in server mode.
//
// Run with Node 20 as `node --import ./polyfill.mjs node.mjs [options]` (the polyfill adds
// Promise.withResolvers, which js-libp2p 3 calls and Node 20 lacks).
//
// Options:
//   --listen <multiaddr>      listen address (default /ip4/127.0.0.1/tcp/0)
//   --echo <protocol>         the echo protocol served (default /interop/echo/1.0.0): one
//                             uvarint-length-prefixed request per stream, answered with one
//                             length-prefixed response `js-echo:` || request, then closed
//   --dht                     run @libp2p/kad-dht in server mode (clientMode false)
//   --dht-protocol <id>       its protocol id (default /ipfs/kad/1.0.0)
//
// Output (stdout): one event per line, `<event> key=value key=value ...`. In values, `%`,
// `,`, `=`, whitespace and control characters are percent-encoded (UTF-8 bytes); lists are
// comma-separated encoded items; byte strings are lowercase hex. Events:
//   listening peer= addr=            one per listen address (with /p2p/<peer>)
//   ready peer= dht=on|off           after all listening lines, once the node's own
//                                    addresses are in its peer store; commands are accepted
//   connected peer= addr= direction= / disconnected peer=
//   identify peer= agent= protocol-version= protocols= listen-addrs=
//   served protocol= peer= request= response=     an echo request answered
//   dht-mode mode=client|server
//   fatal message=                   then exit 1
//
// Commands (stdin, one per line, space-separated; <tag> is echoed back as tag=):
//   dial <tag> <multiaddr>                   -> dialed tag= peer=
//   request <tag> <peer> <protocol> <hex>    -> response tag= peer= protocol= payload=
//   ping <tag> <peer>                        -> pong tag= peer= rtt-ms=
//   provide <tag> <cid>                      -> provided tag= cid=
//   find-providers <tag> <cid>               -> provider tag= peer= addrs= (per provider),
//                                               then providers-done tag= count=
//   find-peer <tag> <peer>                   -> found-peer tag= peer= addrs=
//   closest <tag> <hex key>                  -> closest tag= peer= (per peer), closest-done tag= count=
//   routing-table <tag>                      -> routing-table tag= peers=
//   quit                                     -> exit 0
// Any failing command prints `error tag= cmd= message=`. EOF on stdin also exits, so the node
// never outlives the process that started it.

import { createInterface } from 'node:readline'
import { parseArgs } from 'node:util'
import { noise } from '@chainsafe/libp2p-noise'
import { yamux } from '@chainsafe/libp2p-yamux'
import { identify } from '@libp2p/identify'
import { kadDHT } from '@libp2p/kad-dht'
import { peerIdFromString } from '@libp2p/peer-id'
import { ping } from '@libp2p/ping'
import { tcp } from '@libp2p/tcp'
import { lpStream } from '@libp2p/utils'
import { multiaddr } from '@multiformats/multiaddr'
import { createLibp2p } from 'libp2p'
import { CID } from 'multiformats/cid'

/** Largest request or response accepted on the echo protocol and by `request`. */
const MAX_MESSAGE = 1 << 20
/** Time limit of one echo exchange and of every command. */
const TIMEOUT_MS = 30_000
/** Most commands running at once; beyond it a command fails with `busy`. */
const MAX_RUNNING = 64
const ECHO_PREFIX = new TextEncoder().encode('js-echo:')

const { values: opts } = parseArgs({
  options: {
    listen: { type: 'string', default: '/ip4/127.0.0.1/tcp/0' },
    echo: { type: 'string', default: '/interop/echo/1.0.0' },
    dht: { type: 'boolean', default: false },
    'dht-protocol': { type: 'string', default: '/ipfs/kad/1.0.0' }
  }
})

/** Percent-encodes `%`, `,`, `=`, whitespace and control characters (nothing else). */
function encOne (x) {
  return String(x).replace(/[%,=\s\x00-\x1f\x7f]/g, (c) =>
    Array.from(new TextEncoder().encode(c), (b) => '%' + b.toString(16).toUpperCase().padStart(2, '0')).join(''))
}

function enc (v) {
  return Array.isArray(v) ? v.map(encOne).join(',') : encOne(v)
}

function out (event, fields = {}) {
  const parts = [event]
  for (const [k, v] of Object.entries(fields)) {
    if (v !== undefined) parts.push(`${k}=${enc(v)}`)
  }
  process.stdout.write(parts.join(' ') + '\n')
}

function hex (bytes) {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('hex')
}

function fromHex (s) {
  if (s === undefined || s.length % 2 !== 0 || !/^[0-9a-fA-F]*$/.test(s)) {
    throw new Error(`not hex: ${s}`)
  }
  return new Uint8Array(Buffer.from(s, 'hex'))
}

function fatal (err) {
  out('fatal', { message: err?.stack ?? String(err) })
  process.exit(1)
}
process.on('uncaughtException', fatal)
process.on('unhandledRejection', fatal)

const services = {
  identify: identify(),
  ping: ping()
}
if (opts.dht) {
  services.dht = kadDHT({
    protocol: opts['dht-protocol'],
    clientMode: false,
    // The tests run on 127.0.0.1: keep private addresses (the default mapper drops them).
    peerInfoMapper: (peer) => peer,
    allowQueryWithZeroPeers: true
  })
}

const node = await createLibp2p({
  addresses: { listen: [opts.listen] },
  transports: [tcp()],
  connectionEncrypters: [noise()],
  streamMuxers: [yamux()],
  services
})

node.addEventListener('connection:open', (evt) => {
  const c = evt.detail
  out('connected', { peer: c.remotePeer.toString(), addr: c.remoteAddr.toString(), direction: c.direction })
})
node.addEventListener('peer:disconnect', (evt) => {
  out('disconnected', { peer: evt.detail.toString() })
})
node.addEventListener('peer:identify', (evt) => {
  const r = evt.detail
  out('identify', {
    peer: r.peerId.toString(),
    agent: r.agentVersion ?? '',
    'protocol-version': r.protocolVersion ?? '',
    protocols: r.protocols,
    'listen-addrs': r.listenAddrs.map((a) => a.toString())
  })
})
if (opts.dht) {
  node.services.dht.addEventListener('kad-dht:client-mode', () => out('dht-mode', { mode: 'client' }))
  node.services.dht.addEventListener('kad-dht:server-mode', () => out('dht-mode', { mode: 'server' }))
}

await node.handle(opts.echo, async (stream, connection) => {
  const signal = AbortSignal.timeout(TIMEOUT_MS)
  const lp = lpStream(stream, { maxDataLength: MAX_MESSAGE })
  try {
    const request = (await lp.read({ signal })).subarray()
    const response = new Uint8Array(ECHO_PREFIX.length + request.length)
    response.set(ECHO_PREFIX, 0)
    response.set(request, ECHO_PREFIX.length)
    await lp.write(response, { signal })
    await stream.close({ signal })
    out('served', {
      protocol: opts.echo,
      peer: connection.remotePeer.toString(),
      request: hex(request),
      response: hex(response)
    })
  } catch (err) {
    stream.abort(err)
    out('error', { cmd: 'serve', protocol: opts.echo, message: err.message })
  }
})

await node.start()
await ownAddressesStored()
for (const addr of node.getMultiaddrs()) {
  out('listening', { peer: node.peerId.toString(), addr: addr.toString() })
}
out('ready', { peer: node.peerId.toString(), dht: opts.dht ? 'on' : 'off' })

/**
 * Waits until the peer store's record of this node has its listen addresses (they arrive
 * asynchronously after start): kad-dht answers GET_PROVIDERS with the providers' stored
 * addresses and leaves out those without any, itself included.
 */
async function ownAddressesStored () {
  const until = Date.now() + TIMEOUT_MS
  while (Date.now() < until) {
    try {
      const self = await node.peerStore.get(node.peerId)
      if (self.addresses.length > 0) return
    } catch { /* not stored yet */ }
    await new Promise((resolve) => setTimeout(resolve, 20))
  }
  throw new Error('own addresses never reached the peer store')
}

function dht () {
  if (node.services.dht === undefined) throw new Error('started without --dht')
  return node.services.dht
}

function addrsOf (peerInfo) {
  return peerInfo.multiaddrs.map((a) => a.toString())
}

const commands = {
  async dial (tag, addr) {
    const conn = await node.dial(multiaddr(addr), { signal: AbortSignal.timeout(TIMEOUT_MS) })
    out('dialed', { tag, peer: conn.remotePeer.toString() })
  },

  async request (tag, peer, protocol, payloadHex) {
    const payload = fromHex(payloadHex)
    const signal = AbortSignal.timeout(TIMEOUT_MS)
    const stream = await node.dialProtocol(peerIdFromString(peer), protocol, { signal })
    try {
      const lp = lpStream(stream, { maxDataLength: MAX_MESSAGE })
      await lp.write(payload, { signal })
      const response = (await lp.read({ signal })).subarray()
      await stream.close({ signal })
      out('response', { tag, peer, protocol, payload: hex(response) })
    } catch (err) {
      stream.abort(err)
      throw err
    }
  },

  async ping (tag, peer) {
    const rtt = await node.services.ping.ping(peerIdFromString(peer), { signal: AbortSignal.timeout(TIMEOUT_MS) })
    out('pong', { tag, peer, 'rtt-ms': rtt })
  },

  async provide (tag, cid) {
    const signal = AbortSignal.timeout(TIMEOUT_MS)
    for await (const _ of dht().provide(CID.parse(cid), { signal })) { /* drain the query */ }
    out('provided', { tag, cid })
  },

  async 'find-providers' (tag, cid) {
    const signal = AbortSignal.timeout(TIMEOUT_MS)
    const seen = new Set()
    for await (const event of dht().findProviders(CID.parse(cid), { signal })) {
      if (event.name !== 'PROVIDER') continue
      for (const p of event.providers) {
        const id = p.id.toString()
        if (seen.has(id)) continue
        seen.add(id)
        out('provider', { tag, peer: id, addrs: addrsOf(p) })
      }
    }
    out('providers-done', { tag, count: seen.size })
  },

  async 'find-peer' (tag, peer) {
    const signal = AbortSignal.timeout(TIMEOUT_MS)
    for await (const event of dht().findPeer(peerIdFromString(peer), { signal })) {
      if (event.name === 'FINAL_PEER') {
        out('found-peer', { tag, peer: event.peer.id.toString(), addrs: addrsOf(event.peer) })
        return
      }
    }
    throw new Error('peer not found')
  },

  async closest (tag, keyHex) {
    const signal = AbortSignal.timeout(TIMEOUT_MS)
    const seen = new Set()
    for await (const event of dht().getClosestPeers(fromHex(keyHex), { signal })) {
      if (event.name !== 'FINAL_PEER') continue
      const id = event.peer.id.toString()
      if (seen.has(id)) continue
      seen.add(id)
      out('closest', { tag, peer: id })
    }
    out('closest-done', { tag, count: seen.size })
  },

  async 'routing-table' (tag) {
    const peers = []
    for (const peer of dht().routingTable.kb?.toIterable() ?? []) peers.push(peer.peerId.toString())
    out('routing-table', { tag, peers })
  }
}

let running = 0
const rl = createInterface({ input: process.stdin, terminal: false })
rl.on('line', (line) => {
  const [cmd, tag, ...args] = line.trim().split(/\s+/)
  if (cmd === undefined || cmd === '') return
  if (cmd === 'quit') {
    shutdown(0)
    return
  }
  const run = Object.hasOwn(commands, cmd) ? commands[cmd] : undefined
  if (run === undefined) {
    out('error', { tag: tag ?? '', cmd, message: 'unknown command' })
    return
  }
  if (running >= MAX_RUNNING) {
    out('error', { tag: tag ?? '', cmd, message: 'busy' })
    return
  }
  running++
  run(tag ?? '', ...args)
    .catch((err) => out('error', { tag: tag ?? '', cmd, message: err?.message ?? String(err) }))
    .finally(() => { running-- })
})
rl.on('close', () => shutdown(0))

let stopping = false
function shutdown (code) {
  if (stopping) return
  stopping = true
  // Do not wait long for a graceful stop: the parent is done with us.
  setTimeout(() => process.exit(code), 2000).unref()
  node.stop().finally(() => process.exit(code))
}
process.on('SIGTERM', () => shutdown(0))
process.on('SIGINT', () => shutdown(0))
