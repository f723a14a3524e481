// The millrace dashboard. Every string that comes from data is put on the page with
// textContent (see `el`), never as markup. Values shown carry data-key and data-value
// attributes, so tests (and scripts) can read exactly what the page shows.
(function () {
  'use strict';

  var POLL_MS = 2000;
  var token = (function () {
    var m = /(?:^|[#&])token=([^&]+)/.exec(location.hash || '');
    return m ? decodeURIComponent(m[1]) : null;
  })();
  var charts = {};   // the charts on the page
  var pending = {};  // the charts of the page being built
  var timer = null;

  function headers() { return token ? { Authorization: 'Bearer ' + token } : {}; }

  function get(path, as) {
    return fetch(path, { headers: headers(), cache: 'no-store' }).then(function (r) {
      if (!r.ok) {
        return r.text().then(function (body) {
          var message = body;
          try { message = JSON.parse(body).error || body; } catch (e) { /* not JSON */ }
          throw new Error(path + ': HTTP ' + r.status + ' ' + message);
        });
      }
      return as === 'text' ? r.text() : r.json();
    });
  }

  // An element; `attrs` values are strings set as attributes, children are nodes or text.
  function el(tag, attrs) {
    var node = document.createElement(tag);
    if (attrs) {
      Object.keys(attrs).forEach(function (k) {
        if (attrs[k] !== undefined && attrs[k] !== null) node.setAttribute(k, String(attrs[k]));
      });
    }
    for (var i = 2; i < arguments.length; i++) {
      var child = arguments[i];
      if (child === undefined || child === null) continue;
      node.appendChild(typeof child === 'object' ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function fmt(v) {
    if (v === null || v === undefined) return '—';
    if (typeof v === 'number') {
      if (Number.isInteger(v)) return v.toLocaleString('en-US');
      var a = Math.abs(v);
      return a >= 1000 ? Math.round(v).toLocaleString('en-US') : a >= 1 ? v.toFixed(3) : v.toPrecision(4);
    }
    if (typeof v === 'boolean') return v ? 'yes' : 'no';
    if (typeof v === 'object') return JSON.stringify(v);
    return String(v);
  }

  // A table cell showing `v`, with the raw value for readers of the page.
  function cell(key, v) {
    var raw = typeof v === 'object' && v !== null ? JSON.stringify(v) : v;
    return el('td', { 'data-key': key, 'data-value': raw, class: typeof v === 'number' ? 'num' : null }, fmt(v));
  }

  function table(headings, rows, attrs) {
    var head = el('tr', null);
    headings.forEach(function (h) { head.appendChild(el('th', null, h)); });
    var t = el('table', attrs, el('thead', null, head));
    var body = el('tbody', null);
    rows.forEach(function (r) { body.appendChild(r); });
    t.appendChild(body);
    return t;
  }

  function section(title, attrs) {
    var s = el('section', attrs);
    if (title) s.appendChild(el('h2', null, title));
    for (var i = 2; i < arguments.length; i++) if (arguments[i]) s.appendChild(arguments[i]);
    return s;
  }

  function setStatus(text, isError) {
    var s = document.getElementById('status');
    s.textContent = text;
    s.className = isError ? 'error' : '';
  }

  function polled() {
    var b = document.body;
    b.setAttribute('data-polls', String(Number(b.getAttribute('data-polls') || 0) + 1));
    setStatus('updated ' + new Date().toLocaleTimeString());
  }

  // A line chart (uPlot) of `series` ({label: [[x, y], ...]}) over x; kept by `id` and
  // updated in place on the next poll.
  function chart(id, title, xLabel, series) {
    var labels = Object.keys(series).filter(function (k) { return series[k].length > 0; });
    var xs = [];
    var seen = {};
    labels.forEach(function (k) { series[k].forEach(function (p) { if (!seen[p[0]]) { seen[p[0]] = true; xs.push(p[0]); } }); });
    xs.sort(function (a, b) { return a - b; });
    var data = [xs].concat(labels.map(function (k) {
      var at = {};
      series[k].forEach(function (p) { at[p[0]] = p[1]; });
      return xs.map(function (x) { return at[x] === undefined ? null : at[x]; });
    }));
    var points = labels.reduce(function (n, k) { return n + series[k].length; }, 0);
    var box = el('div', { class: 'chart', 'data-chart': id, 'data-points': points, 'data-series': labels.join(',') },
      el('div', { class: 'title' }, title));
    if (xs.length === 0 || typeof uPlot === 'undefined') {
      box.appendChild(el('p', { class: 'muted' }, 'no points yet'));
      return box;
    }
    var colors = ['#2563eb', '#dc2626', '#16a34a', '#9333ea', '#ea580c', '#0891b2', '#4b5563', '#db2777'];
    var opts = {
      width: 560, height: 260,
      scales: { x: { time: false } },
      axes: [{ label: xLabel }, {}],
      series: [{ label: xLabel }].concat(labels.map(function (k, i) {
        return { label: k, stroke: colors[i % colors.length], width: 1.5, spanGaps: true };
      })),
    };
    pending[id] = new uPlot(opts, data, box);
    return box;
  }

  function nav(config) {
    var n = document.getElementById('nav');
    n.textContent = '';
    if (config.runs) n.appendChild(el('a', { href: '/ui' + location.hash }, 'Runs'));
    if (config.server) n.appendChild(el('a', { href: '/ui/server' + location.hash }, 'Server'));
  }

  function show(node) {
    var main = document.getElementById('main');
    Object.keys(charts).forEach(function (k) { charts[k].destroy(); });
    charts = pending;
    pending = {};
    main.textContent = '';
    main.appendChild(node);
  }

  function fail(e) {
    setStatus(String(e.message || e), true);
    show(el('p', { class: 'error' }, String(e.message || e)));
  }

  // ---- runs ---------------------------------------------------------------------------

  function headline(metrics) {
    if (!metrics || typeof metrics !== 'object') return '—';
    return Object.keys(metrics).filter(function (k) { return typeof metrics[k] === 'number' && k !== 'rows'; })
      .slice(0, 3).map(function (k) { return k + ' ' + fmt(metrics[k]); }).join(', ') || '—';
  }

  function fileLink(id, name) {
    var href = '/ui/api/runs/' + encodeURIComponent(id) + '/files/' + name.split('/').map(encodeURIComponent).join('/');
    return el('a', { href: href }, name);
  }

  function runsPage() {
    return get('/ui/api/runs').then(function (data) {
      var rows = data.runs.map(function (r) {
        var files = el('td', { class: 'mono' });
        r.artifacts.filter(function (a) { return a.slice(-1) !== '/'; }).forEach(function (a, i) {
          if (i) files.appendChild(document.createTextNode(' '));
          files.appendChild(fileLink(r.id, a));
        });
        return el('tr', { 'data-run': r.id },
          el('td', { 'data-key': 'name', 'data-value': r.name }, el('a', { href: '/ui/runs/' + encodeURIComponent(r.id) + location.hash }, r.name)),
          el('td', { class: 'mono', 'data-key': 'id', 'data-value': r.id }, r.id),
          el('td', { 'data-key': 'kind', 'data-value': r.kind }, r.kind),
          el('td', { 'data-key': 'status', 'data-value': r.status }, el('span', { class: 'badge ' + r.status }, r.status)),
          cell('rows_read', r.rows_read), cell('rows_per_s', r.rows_per_s), cell('wall_s', r.wall_s),
          el('td', { 'data-key': 'metrics', 'data-value': JSON.stringify(r.metrics) }, headline(r.metrics)),
          files);
      });
      var body = el('div', null, el('h1', null, 'Runs'),
        el('p', { class: 'muted' }, data.runs.length + ' runs in ', el('span', { class: 'mono' }, data.root)),
        section(null, null, table(['run', 'id', 'kind', 'status', 'rows read', 'rows/s', 'wall s', 'metrics', 'files'], rows, { id: 'runs' })));
      show(body);
      polled();
      return true; // new runs appear, running ones finish
    });
  }

  function keyValues(obj, id) {
    var rows = Object.keys(obj || {}).filter(function (k) {
      var v = obj[k];
      return v === null || typeof v !== 'object';
    }).map(function (k) { return el('tr', null, el('th', null, k), cell(k, obj[k])); });
    return table(['', ''], rows, { id: id });
  }

  function runPage(id) {
    return get('/ui/api/runs/' + encodeURIComponent(id)).then(function (r) {
      var page = el('div', null, el('h1', null, r.name + ' ', el('span', { class: 'badge ' + r.status, id: 'run-status' }, r.status)),
        el('p', { class: 'muted' }, r.kind + ' run ', el('span', { class: 'mono' }, r.id)));
      var evalSeries = {};
      (r.eval || []).forEach(function (line) {
        Object.keys(line).forEach(function (k) {
          if (k === 'step' || k === 'epoch' || k === 'rows' || k === 'elapsed_s') return;
          (evalSeries[k] = evalSeries[k] || []).push([line.step, line[k]]);
        });
      });
      // A tune run's curves are its trials'; other runs have one training curve.
      var trained = (r.train || []).length > 0 || (r.eval || []).length > 0;
      if (r.trials && r.trials.length) {
        var histories = {}, losses = {};
        r.trials.forEach(function (t) {
          histories[t.trial] = (t.history || []).map(function (v, i) { return [i + 1, v]; });
          losses[t.trial] = (t.loss || []).map(function (v, i) { return [i + 1, v]; });
        });
        page.appendChild(section('Trials', null, el('div', { class: 'charts' },
            chart('trials', 'metric at each report', 'report', histories),
            chart('trial-loss', 'training loss at each report', 'report', losses)),
          table(['trial', 'status', 'stop reason', 'metric', 'reports', 'config'], r.trials.map(function (t) {
            return el('tr', { 'data-trial': t.trial }, el('td', { class: 'mono' }, t.trial), cell('status', t.status),
              cell('stop_reason', t.stop_reason), cell('metric', t.metric), cell('reports', t.reports),
              el('td', { class: 'mono' }, JSON.stringify(t.config)));
          }), { id: 'trials' })));
      }
      if (trained || r.kind !== 'tune') {
        page.appendChild(section('Training', null, el('div', { class: 'charts' },
          chart('loss', 'training loss', 'step', { loss: r.train || [] }),
          chart('eval', r.kind === 'stream' ? 'prequential metrics' : 'evaluation', 'step', evalSeries),
          chart('throughput', r.kind === 'stream' ? 'events trained per second' : 'rows trained per second', 'step',
            r.kind === 'stream' ? { 'events/s': r.throughput || [] } : { 'rows/s': r.throughput || [] }),
          r.kind === 'stream' ? chart('freshness', 'freshness: event to served model (ms)', 'step', {
            p50: (r.freshness || []).map(function (p) { return [p[0], p[1]]; }),
            max: (r.freshness || []).map(function (p) { return [p[0], p[2]]; })
          }) : null)));
      }
      if (r.summary) {
        page.appendChild(section('Summary', null, keyValues(r.summary, 'summary')));
        if (r.summary.phases) page.appendChild(section('Phases (s)', null, keyValues(r.summary.phases, 'phases')));
      }
      if (r.operators) {
        page.appendChild(section('Operators', null, table(['operator', 'rows in', 'rows out', 'dead letters', 'busy s'],
          r.operators.map(function (o) {
            return el('tr', { 'data-operator': o.operator }, el('td', { class: 'mono' }, o.operator),
              cell('rows_in', o.rows_in), cell('rows_out', o.rows_out), cell('dead_letters', o.dead_letters), cell('busy_s', o.busy_s));
          }), { id: 'operators' })));
      }
      if (r.versions && r.versions.length) {
        page.appendChild(section('Model versions published', null,
          el('p', { id: 'versions', 'data-value': r.versions.join(',') }, r.versions.map(String).join(', '))));
      }
      if (r.checkpoints && typeof r.checkpoints === 'object') {
        page.appendChild(section('Checkpoints', null, keyValues(r.checkpoints, 'checkpoints')));
      }
      var dead = r.dead_letters || { total: 0, sample: [] };
      page.appendChild(section('Dead letters', null,
        el('p', { id: 'dead-total', 'data-value': dead.total }, dead.total + ' dead letters' + (dead.sample.length < dead.total ? ' (first ' + dead.sample.length + ' shown)' : '')),
        dead.sample.length ? table(['operator', 'reason', 'origin', 'rows', 'record'], dead.sample.map(function (d) {
          return el('tr', { class: 'dead' }, el('td', { class: 'mono' }, d.operator), el('td', { class: 'reason' }, d.reason),
            el('td', { class: 'mono' }, d.origin), cell('rows', d.rows), el('td', { class: 'record mono' }, d.record));
        }), { id: 'dead' }) : null));
      var files = el('p', { class: 'mono' });
      r.artifacts.forEach(function (a, i) {
        if (i) files.appendChild(document.createTextNode(' '));
        files.appendChild(a.slice(-1) === '/' ? document.createTextNode(a) : fileLink(r.id, a));
      });
      page.appendChild(section('Files', null, files,
        r.artifacts.indexOf('curves.png') >= 0 ? el('img', { class: 'curves', alt: 'training curves', src: '/ui/api/runs/' + encodeURIComponent(r.id) + '/files/curves.png' }) : null));
      if (r.pipeline) page.appendChild(section('Pipeline', null, el('pre', null, r.pipeline)));
      show(page);
      polled();
      return r.status === 'running';
    });
  }

  // ---- the server ----------------------------------------------------------------------

  // Prometheus text → [{name, labels, value}].
  function parseMetrics(text) {
    var out = [];
    text.split('\n').forEach(function (line) {
      if (!line || line.charAt(0) === '#') return;
      var m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)/.exec(line);
      if (!m) return;
      var labels = {};
      var re = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g;
      var l;
      while ((l = re.exec(m[3] || '')) !== null) labels[l[1]] = l[2].replace(/\\n/g, '\n').replace(/\\"/g, '"').replace(/\\\\/g, '\\');
      out.push({ name: m[1], labels: labels, value: Number(m[4]) });
    });
    return out;
  }

  // The upper bound of the bucket holding quantile q of a histogram's buckets [[le, count]].
  function quantile(buckets, q) {
    var total = buckets.length ? buckets[buckets.length - 1][1] : 0;
    if (!total) return null;
    for (var i = 0; i < buckets.length; i++) if (buckets[i][1] >= q * total) return buckets[i][0];
    return null;
  }

  var history = { t: [], rate: {} };
  var last = null;

  function serverPage() {
    return Promise.all([get('/metrics', 'text'), get('/v2')]).then(function (got) {
      var samples = parseMetrics(got[0]);
      var now = Date.now() / 1000;
      var byRoute = {};
      samples.forEach(function (s) {
        var key = s.labels.route + ' ' + (s.labels.model || '');
        if (!s.labels.route) return;
        var r = byRoute[key] = byRoute[key] || { route: s.labels.route, model: s.labels.model || '', requests: 0, errors: 0, sum: 0, count: 0, buckets: [] };
        if (s.name === 'millrace_serve_requests_total') {
          r.requests += s.value;
          if (Number(s.labels.code) >= 400) r.errors += s.value;
        } else if (s.name === 'millrace_serve_request_duration_seconds_sum') r.sum = s.value;
        else if (s.name === 'millrace_serve_request_duration_seconds_count') r.count = s.value;
        else if (s.name === 'millrace_serve_request_duration_seconds_bucket' && s.labels.le !== '+Inf') r.buckets.push([Number(s.labels.le), s.value]);
      });
      var routes = Object.keys(byRoute).sort().map(function (k) { return byRoute[k]; });
      var rates = {};
      routes.forEach(function (r) {
        var key = r.route + ' ' + r.model;
        rates[key] = last && last.requests[key] !== undefined ? (r.requests - last.requests[key]) / Math.max(now - last.t, 1e-3) : null;
      });
      var counts = {};
      routes.forEach(function (r) { counts[r.route + ' ' + r.model] = r.requests; });
      if (last) {
        history.t.push(now);
        Object.keys(rates).forEach(function (k) {
          (history.rate[k] = history.rate[k] || []).push([Math.round(now - history.t[0]), rates[k] || 0]);
        });
      } else {
        history.t.push(now);
      }
      last = { t: now, requests: counts };
      var models = samples.filter(function (s) { return s.name === 'millrace_serve_model_version'; });
      var batches = {};
      samples.forEach(function (s) {
        if (s.name.indexOf('millrace_serve_batch_rows') !== 0) return;
        var b = batches[s.labels.model] = batches[s.labels.model] || { sum: 0, count: 0, buckets: [] };
        if (s.name === 'millrace_serve_batch_rows_sum') b.sum = s.value;
        else if (s.name === 'millrace_serve_batch_rows_count') b.count = s.value;
        else if (s.labels.le !== '+Inf') b.buckets.push([Number(s.labels.le), s.value]);
      });
      var page = el('div', null, el('h1', null, 'Server'),
        el('p', { class: 'muted' }, (got[1].name || 'millrace') + ' ' + (got[1].version || '')),
        section('Models', null, table(['model', 'version served'], models.map(function (m) {
          return el('tr', { 'data-model': m.labels.model }, el('td', { class: 'mono' }, m.labels.model), cell('version', m.value));
        }), { id: 'models' })),
        section('Requests by route', null, el('div', { class: 'charts' }, chart('rate', 'requests per second', 'seconds', history.rate)),
          table(['route', 'model', 'requests', 'req/s', 'errors', 'mean ms', 'p50 ≤ ms', 'p99 ≤ ms'], routes.map(function (r) {
            var p50 = quantile(r.buckets, 0.5), p99 = quantile(r.buckets, 0.99);
            return el('tr', { 'data-route': r.route, 'data-model': r.model }, el('td', { class: 'mono' }, r.route), el('td', { class: 'mono' }, r.model),
              cell('requests', r.requests), cell('rate', rates[r.route + ' ' + r.model]), cell('errors', r.errors),
              cell('mean_ms', r.count ? 1000 * r.sum / r.count : null), cell('p50_ms', p50 === null ? null : 1000 * p50), cell('p99_ms', p99 === null ? null : 1000 * p99));
          }), { id: 'routes' })),
        section('Batches', null, table(['model', 'batches', 'rows', 'mean rows per batch', 'p50 ≤ rows', 'p99 ≤ rows'], Object.keys(batches).sort().map(function (m) {
          var b = batches[m];
          return el('tr', { 'data-model': m }, el('td', { class: 'mono' }, m), cell('batches', b.count), cell('rows', b.sum),
            cell('mean_rows', b.count ? b.sum / b.count : null), cell('p50_rows', quantile(b.buckets, 0.5)), cell('p99_rows', quantile(b.buckets, 0.99)));
        }), { id: 'batches' })));
      show(page);
      polled();
      return true;
    });
  }

  // ---- routing and polling -------------------------------------------------------------

  function route(config) {
    var path = location.pathname.replace(/\/+$/, '');
    var m = /^\/ui\/runs\/([^/]+)$/.exec(path);
    if (m) return function () { return runPage(decodeURIComponent(m[1])); };
    if (path === '/ui/server' || (!config.runs && config.server)) return serverPage;
    return runsPage;
  }

  function loop(render) {
    render().then(function (live) {
      if (live) timer = setTimeout(function () { loop(render); }, POLL_MS);
    }).catch(function (e) {
      fail(e);
      timer = setTimeout(function () { loop(render); }, POLL_MS * 2);
    });
  }

  function start() {
    get('/ui/api/config').then(function (config) {
      nav(config);
      loop(route(config));
    }).catch(fail);
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', start);
  else start();
  window.addEventListener('beforeunload', function () { if (timer) clearTimeout(timer); });
}());
