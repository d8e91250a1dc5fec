#!/usr/bin/env node
// scripts/bench.mjs — the table of scripts/bench: reads the RESULT lines it collected (one per run, prefixed with
// "target=warren|webstomp|amqp run=N") and prints markdown: medians per scenario and target, and the ratios.
//
//   node scripts/bench.mjs RESULTS-FILE
//
// Throughput is deliveries/s at the subscribers (receipts/s for receipts, sessions/s for idle connects, cycles/s for
// churn). CPU is server-side CPU-seconds per million deliveries: warren + broker for warren, the broker alone for
// Web-STOMP and AMQP (the same beam.smp). A cell marked "!" had loss, duplicates or errors in at least one run.
import { readFileSync } from 'node:fs';

const file = process.argv[2];
if (!file) {
  console.error('usage: node scripts/bench.mjs RESULTS-FILE');
  process.exit(2);
}
const rows = readFileSync(file, 'utf8').split('\n').filter((l) => l.includes('RESULT')).map((l) => {
  const r = {};
  for (const kv of l.replace('RESULT ', '').trim().split(/\s+/)) {
    const i = kv.indexOf('=');
    if (i > 0) r[kv.slice(0, i)] = kv.slice(i + 1);
  }
  return r;
});
const num = (v) => (v === undefined || v === '' || Number.isNaN(Number(v)) ? undefined : Number(v));
const median = (a) => {
  const s = a.filter((x) => x !== undefined && Number.isFinite(x)).sort((x, y) => x - y);
  if (s.length === 0) return undefined;
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};
const labels = [...new Set(rows.map((r) => r.label).filter(Boolean))];
const of = (label, target) => rows.filter((r) => r.label === label && r.target === target);
const med = (label, target, f) => median(of(label, target).map(f));
const bad = (label, target) =>
  of(label, target).some((r) => r.scenario === 'failed' || num(r.loss) > 0 || num(r.dup) > 0 || num(r.errors) > 0);
const fmt = (v, d = 0) => {
  if (v === undefined) return '—';
  if (Math.abs(v) >= 10000) return `${(v / 1000).toFixed(1)} k`;
  return v.toFixed(d);
};
const ratio = (a, b) => (a === undefined || b === undefined || b === 0 ? '—' : `${(a / b).toFixed(2)}×`);
const cpuPerM = (r) => {
  const recv = num(r.recv) ?? num(r.cycles);
  if (!recv) return undefined;
  const cpu = (num(r.cpu_server) ?? 0) + (num(r.cpu_broker) ?? 0);
  return (cpu / recv) * 1e6;
};
const ms = (v) => {
  if (v === undefined) return '—';
  const x = v / 1000;
  return x >= 100 ? x.toFixed(0) : x >= 10 ? x.toFixed(1) : x.toFixed(2);
};

const runs = median(labels.map((l) => of(l, 'warren').length));
console.log(`medians of ${runs ?? 0} runs; rates in deliveries/s (receipts/s, cycles/s); latency in ms; CPU-s per million deliveries, server side\n`);
console.log('| scenario | warren | Web-STOMP | warren / Web-STOMP | AMQP | warren / AMQP | p50 warren / Web-STOMP / AMQP | p99 warren / Web-STOMP / AMQP | CPU-s/M warren+broker / Web-STOMP / AMQP | generator CPU % w / ws |');
console.log('|---|---|---|---|---|---|---|---|---|---|');
const idle = [];
for (const l of labels) {
  const first = rows.find((r) => r.label === l && r.scenario !== 'failed');
  if (first && first.scenario === 'idle') {
    idle.push(l);
    continue;
  }
  const rate = (t) => med(l, t, (r) => num(r.rate));
  const [w, s, a] = ['warren', 'webstomp', 'amqp'].map(rate);
  const mark = (t) => (bad(l, t) ? ' !' : '');
  const lat = (q) => ['warren', 'webstomp', 'amqp'].map((t) => ms(med(l, t, (r) => num(r[q])))).join(' / ');
  const cpu = ['warren', 'webstomp', 'amqp'].map((t) => fmt(med(l, t, cpuPerM), 1)).join(' / ');
  const gen = ['warren', 'webstomp'].map((t) => fmt(med(l, t, (r) => num(r.cpu_self_pct)))).join(' / ');
  console.log(`| ${l} | ${fmt(w)}${mark('warren')} | ${fmt(s)}${mark('webstomp')} | ${ratio(w, s)} | ${fmt(a)}${mark('amqp')} | ${ratio(w, a)} | ${lat('p50_us')} | ${lat('p99_us')} | ${cpu} | ${gen} |`);
}
if (idle.length) {
  console.log('\n| idle sessions (count) | connect rate warren / Web-STOMP (ratio) | kB per session: warren + broker / Web-STOMP (broker) (ratio) | warren alone kB/session | idle CPU % of a core: warren / its broker / Web-STOMP broker |');
  console.log('|---|---|---|---|---|');
  for (const l of idle) {
    const cr = ['warren', 'webstomp'].map((t) => med(l, t, (r) => num(r.connect_rate)));
    const kb = ['warren', 'webstomp'].map((t) =>
      med(l, t, (r) => (num(r.kb_per_session_server) ?? 0) + (num(r.kb_per_session_broker) ?? 0)));
    const wk = med(l, 'warren', (r) => num(r.kb_per_session_server));
    const cpu = [med(l, 'warren', (r) => num(r.idle_cpu_pct_server)), med(l, 'warren', (r) => num(r.idle_cpu_pct_broker)),
      med(l, 'webstomp', (r) => num(r.idle_cpu_pct_broker))];
    const n = med(l, 'warren', (r) => num(r.sessions));
    console.log(`| ${l} (${fmt(n)})${bad(l, 'warren') ? ' !' : ''} | ${fmt(cr[0])} / ${fmt(cr[1])}${bad(l, 'webstomp') ? ' !' : ''} (${ratio(cr[0], cr[1])}) | ${fmt(kb[0], 1)} / ${fmt(kb[1], 1)} (${ratio(kb[0], kb[1])}) | ${fmt(wk, 1)} | ${cpu.map((c) => fmt(c, 2)).join(' / ')} |`);
  }
}

// Where warren's CPU went, by thread (server_threads=name/tid:seconds,...; named warren-w0, warren-w1 for the workers,
// warren-amqp for the broker connections' login and close threads): the median share of each thread kind of warren's CPU per run.
const threadRows = labels.filter((l) => !idle.includes(l) && of(l, 'warren').some((r) => r.server_threads));
if (threadRows.length) {
  console.log('\n| scenario | warren CPU by thread: share of warren\'s CPU-s (median of the runs) |');
  console.log('|---|---|');
  for (const l of threadRows) {
    const shares = {};
    for (const r of of(l, 'warren')) {
      if (!r.server_threads) continue;
      const by = {};
      let total = 0;
      for (const t of r.server_threads.split(',')) {
        const m = /^(.*)\/\d+:([\d.]+)$/.exec(t);
        if (!m) continue;
        by[m[1]] = (by[m[1]] ?? 0) + Number(m[2]);
        total += Number(m[2]);
      }
      for (const [k, v] of Object.entries(by)) (shares[k] ??= []).push(total > 0 ? v / total : 0);
    }
    const cells = Object.entries(shares).map(([k, v]) => [k, median(v)]).sort((a, b) => b[1] - a[1]);
    console.log(`| ${l} | ${cells.map(([k, v]) => `${k} ${(v * 100).toFixed(0)} %`).join(', ')} |`);
  }
}
