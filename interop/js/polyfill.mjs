// Node 20 lacks Promise.withResolvers (Node 22 has it), which js-libp2p 3 calls.
// Loaded before anything else with `node --import ./polyfill.mjs node.mjs`.
if (typeof Promise.withResolvers !== 'function') {
  Object.defineProperty(Promise, 'withResolvers', {
    value: function withResolvers () {
      let resolve
      let reject
      const promise = new this((res, rej) => {
        resolve = res
        reject = rej
      })
      return { promise, resolve, reject }
    },
    writable: true,
    configurable: true
  })
}
