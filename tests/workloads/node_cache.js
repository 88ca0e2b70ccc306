// node_cache.js - a Node program with an unbounded Map cache: every 20 ms
// rememberRequest() stores 50 new 4 KiB Buffers under new keys and never
// evicts. Buffer memory is native (calloc through Node's ArrayBuffer
// allocator), so memtrace's stacks run from calloc through Node and V8
// into the JavaScript function; run with --perf-basic-prof (and
// --interpreted-frames-native-stack) so V8 writes /tmp/perf-PID.map and
// the JavaScript frames get names.
//
// Prints "ready", then grows until killed.
const cache = new Map();
let next = 0;

function rememberRequest(id) {
  cache.set('request-' + id, Buffer.alloc(4096, 1));
}

console.log('ready');
setInterval(() => {
  for (let k = 0; k < 50; k++) rememberRequest(next++);
}, 20);
