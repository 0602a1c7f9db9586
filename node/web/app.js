/* Chorus dashboard: polls the node's JSON API (docs/http.md) and keeps the
 * page's tables in step without reloading. Plain browser JavaScript, no
 * build step, nothing from outside the node.
 *
 * Every string from the API (member names, task errors, schedule notes...)
 * comes from the network: it only ever reaches the page through textContent
 * or an attribute, never as markup. */
'use strict';
(function () {
	var POLL_MS = 2000;          /* members, tasks, fan-outs, status */
	var SLOW_EVERY = 3;          /* schedules and cache: every 3rd poll */
	var EVENTS_WAIT_MS = 25000;  /* long-poll of /api/events */
	var EVENTS_KEEP = 200;       /* lines kept in the events panel */
	var TOKEN_KEY = 'chorus.token';

	var token = sessionStorage.getItem(TOKEN_KEY) || '';
	var canWrite = false;
	var authChecked = false;
	var polls = 0;
	var pollTimer = null;
	var polling = false;
	/* schedule name -> true while its history is shown; no prototype: a
	 * schedule may be named "constructor" or "__proto__" */
	var openHistory = Object.create(null);

	function $(id) { return document.getElementById(id); }

	/* ---- small DOM helpers: text only, never markup ---- */

	function el(tag, cls, text) {
		var e = document.createElement(tag);
		if (cls) e.className = cls;
		if (text !== undefined && text !== null) e.textContent = String(text);
		return e;
	}

	function setText(e, s) {
		s = (s === undefined || s === null) ? '' : String(s);
		if (e.textContent !== s) e.textContent = s;
	}

	function setAttr(e, name, v) {
		v = String(v);
		if (e.getAttribute(name) !== v) e.setAttribute(name, v);
	}

	function setClass(e, cls) {
		if (e.className !== cls) e.className = cls;
	}

	/* Keeps tbody's rows equal to items, in order, one row per key: rows
	 * are created once (make), refreshed in place (update) and removed when
	 * their item is gone, so nothing flickers and focus is kept. */
	function syncRows(tbody, items, key, make, update) {
		var old = Object.create(null);
		var rows = tbody.rows;
		for (var i = 0; i < rows.length; i++) old[rows[i].dataset.key] = rows[i];
		var keep = Object.create(null);
		var prev = null;
		items.forEach(function (it) {
			var k = String(key(it));
			var tr = old[k];
			if (!tr) {
				tr = make(it);
				tr.dataset.key = k;
			}
			keep[k] = true;
			update(tr, it);
			var want = prev ? prev.nextSibling : tbody.firstChild;
			if (want !== tr) tbody.insertBefore(tr, want);
			prev = tr;
		});
		Object.keys(old).forEach(function (k) {
			if (!keep[k] && old[k].parentNode === tbody) tbody.removeChild(old[k]);
		});
	}

	function row(ncells) {
		var tr = document.createElement('tr');
		for (var i = 0; i < ncells; i++) tr.appendChild(document.createElement('td'));
		return tr;
	}

	/* ---- formatting ---- */

	function pad(n) { return (n < 10 ? '0' : '') + n; }

	function clock(ms) {
		if (!ms) return '';
		var d = new Date(ms);
		return pad(d.getHours()) + ':' + pad(d.getMinutes()) + ':' + pad(d.getSeconds());
	}

	function duration(ms) {
		if (ms === null || ms === undefined || ms < 0) return '';
		if (ms < 1000) return ms + ' ms';
		var s = Math.round(ms / 1000);
		if (s < 60) return (ms / 1000).toFixed(1) + ' s';
		if (s < 3600) return Math.floor(s / 60) + 'm ' + (s % 60) + 's';
		if (s < 86400) return Math.floor(s / 3600) + 'h ' + Math.floor((s % 3600) / 60) + 'm';
		return Math.floor(s / 86400) + 'd ' + Math.floor((s % 86400) / 3600) + 'h';
	}

	function bytes(n) {
		if (n === undefined || n === null) return '';
		var u = ['B', 'KiB', 'MiB', 'GiB', 'TiB'], i = 0;
		while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
		return (i ? n.toFixed(1) : n) + ' ' + u[i];
	}

	function num(n) { return (n === undefined || n === null) ? '' : String(n); }

	/* ---- talking to the node ---- */

	function ApiError(status, message) {
		this.status = status;
		this.message = message;
	}

	/* GET or POST a JSON endpoint. A failure to reach the node at all
	 * (network error, 502-504) is `unreachable`; an answer with an error
	 * status keeps the node's own message. */
	function api(path, method) {
		var opts = { method: method || 'GET', headers: {}, cache: 'no-store' };
		if (token) opts.headers.Authorization = 'Bearer ' + token;
		return fetch(path, opts).then(function (r) {
			return r.text().then(function (t) {
				var body = null;
				try { body = t ? JSON.parse(t) : null; } catch (e) { body = null; }
				if (!r.ok) {
					var msg = (body && body.error) ? body.error : (r.status + ' ' + r.statusText);
					var err = new ApiError(r.status, msg);
					err.unreachable = r.status >= 502 && r.status <= 504;
					throw err;
				}
				return body;
			});
		}, function (e) {
			var err = new ApiError(0, 'cannot reach the node (' + (e && e.message ? e.message : e) + ')');
			err.unreachable = true;
			throw err;
		});
	}

	/* Runs one endpoint's fetch and render; the section shows its own
	 * error. Resolves to the error (or null), never rejects. */
	function section(name, path, render) {
		return api(path).then(function (body) {
			setText($(name + '-error'), '');
			render(body);
			return null;
		}, function (err) {
			if (!err.unreachable) setText($(name + '-error'), path + ': ' + err.message);
			return err;
		});
	}

	/* ---- header ---- */

	function renderStatus(st) {
		setText($('node-name'), st.name || '');
		document.title = 'Chorus ' + (st.name || '');
		setText($('leader'), st.raft_leader || 'none');
		setText($('task-counts'), num(st.running) + ' running, ' + num(st.queued) + ' queued');
	}

	/* ---- members ---- */

	function renderMembers(list) {
		list = list || [];
		var alive = list.filter(function (m) { return m.state === 'alive'; }).length;
		setText($('cluster-size'), alive + ' alive of ' + list.length);
		syncRows($('members').tBodies[0], list, function (m) { return m.id || m.name; },
			function () { return row(6); },
			function (tr, m) {
				var c = tr.cells;
				setAttr(tr, 'data-member', m.name);
				setAttr(tr, 'data-state', m.state);
				setText(c[0], m.name + (m.self ? ' (this node)' : ''));
				setText(c[1], m.state);
				setClass(c[1], 'state state-' + m.state);
				setText(c[2], m.addr);
				setText(c[3], num(m.load) + ' / ' + num(m.capacity));
				setText(c[4], (m.tags || []).join(', '));
				setText(c[5], num(m.incarnation));
			});
	}

	/* ---- write buttons ---- */

	function writeButton(label, action) {
		var b = el('button', 'write', label);
		b.type = 'button';
		b.dataset.action = action;
		b.addEventListener('click', onWrite);
		refreshButton(b);
		return b;
	}

	function refreshButton(b) {
		b.disabled = !canWrite;
		var why = canWrite ? '' : (token ? 'the token was not accepted' :
			'enter the token (clusterctl http-token) to enable');
		if (b.title !== why) b.title = why;
	}

	function refreshButtons() {
		var bs = document.querySelectorAll('button.write');
		for (var i = 0; i < bs.length; i++) refreshButton(bs[i]);
	}

	function onWrite(ev) {
		var b = ev.currentTarget;
		var path = b.dataset.path;
		if (!path || !canWrite) return;
		b.disabled = true;
		api(path, 'POST').then(function () {
			say(b.dataset.what + ': done', false);
		}, function (err) {
			say(b.dataset.what + ': ' + err.message, true);
		}).then(function () {
			refreshButton(b);
			pollNow();
		});
	}

	function say(text, bad) {
		var s = $('action-status');
		setText(s, text);
		setClass(s, 'action-status ' + (bad ? 'bad' : 'good'));
	}

	/* ---- tasks ---- */

	var OPEN_TASK = { queued: 1, running: 1, pending: 1, backoff: 1 };

	function renderTasks(list) {
		list = list || [];
		$('tasks-empty').hidden = list.length > 0;
		syncRows($('tasks').tBodies[0], list, function (t) { return t.task_id; },
			function (t) {
				var tr = row(9);
				tr.cells[7].className = 'wrap';
				var b = writeButton('Cancel', 'cancel-task');
				b.dataset.path = '/api/tasks/' + encodeURIComponent(t.task_id) + '/cancel';
				b.dataset.what = 'cancel task ' + t.task_id;
				tr.cells[8].appendChild(b);
				return tr;
			},
			function (tr, t) {
				var c = tr.cells;
				setAttr(tr, 'data-task-id', t.task_id);
				setAttr(tr, 'data-state', t.state);
				setText(c[0], t.task_id);
				setText(c[1], t.state);
				setClass(c[1], 'state state-' + t.state);
				setText(c[2], t.handler);
				setText(c[3], t.node);
				setText(c[4], num(t.attempts));
				setText(c[5], clock(t.submitted_ms));
				var end = t.finished_ms || (t.started_ms ? Date.now() : 0);
				setText(c[6], t.started_ms ? duration(end - t.started_ms) : '');
				var fin = t.state !== undefined && !OPEN_TASK[t.state];
				setText(c[7], fin ? ('exit ' + num(t.exit_code) + (t.error ? ': ' + t.error : '')) : '');
				c[8].firstChild.hidden = fin;
			});
	}

	/* ---- fan-outs ---- */

	function renderFanouts(list) {
		list = list || [];
		$('fanouts-empty').hidden = list.length > 0;
		syncRows($('fanouts').tBodies[0], list, function (f) { return f.batch_id; },
			function (f) {
				var tr = row(8);
				var bar = el('div', 'bar');
				bar.appendChild(el('div', 'fill'));
				tr.cells[3].appendChild(bar);
				var b = writeButton('Cancel', 'cancel-fanout');
				b.dataset.path = '/api/fanouts/' + encodeURIComponent(f.batch_id) + '/cancel';
				b.dataset.what = 'cancel fan-out ' + f.batch_id;
				tr.cells[7].appendChild(b);
				return tr;
			},
			function (tr, f) {
				var c = tr.cells;
				var total = f.total || 0, done = f.done || 0;
				var pct = total > 0 ? Math.floor(done * 100 / total) : (f.state === 'running' ? 0 : 100);
				setAttr(tr, 'data-fanout-id', f.batch_id);
				setAttr(tr, 'data-state', f.state);
				setAttr(tr, 'data-progress', pct);
				setText(c[0], f.batch_id);
				setText(c[1], f.handler);
				setText(c[2], f.state);
				setClass(c[2], 'state state-' + f.state);
				var fill = c[3].firstChild.firstChild;
				var w = pct + '%';
				if (fill.style.width !== w) fill.style.width = w;
				setClass(fill, 'fill' + (f.failed || f.timed_out || f.lost ? ' has-failed' : ''));
				setAttr(c[3].firstChild, 'title', pct + '%');
				setText(c[4], done + ' / ' + total + ' (' + pct + '%)');
				setText(c[5], num(f.succeeded) + ' / ' + num((f.failed || 0) + (f.timed_out || 0)) + ' / ' +
					num(f.cancelled) + ' / ' + num(f.lost));
				setText(c[6], clock(f.submitted_ms));
				c[7].firstChild.hidden = f.state !== 'running';
			});
	}

	/* ---- schedules ---- */

	function renderSchedules(list) {
		list = list || [];
		$('schedules-empty').hidden = list.length > 0;
		var rows = [];
		list.forEach(function (s) {
			rows.push({ k: 's:' + s.name, s: s });
			if (openHistory[s.name]) rows.push({ k: 'h:' + s.name, h: s.name });
		});
		syncRows($('schedules').tBodies[0], rows, function (r) { return r.k; },
			function (r) {
				if (r.h !== undefined) {
					var htr = document.createElement('tr');
					htr.className = 'history';
					var td = document.createElement('td');
					td.colSpan = 8;
					td.appendChild(el('ol', 'history-list'));
					htr.appendChild(td);
					return htr;
				}
				var s = r.s;
				var tr = row(8);
				var hb = el('button', 'link', s.name);
				hb.type = 'button';
				hb.title = 'show or hide its runs';
				hb.addEventListener('click', function () {
					openHistory[s.name] = !openHistory[s.name];
					pollNow();
				});
				tr.cells[0].appendChild(hb);
				['pause', 'resume', 'trigger'].forEach(function (a) {
					var b = writeButton(a.charAt(0).toUpperCase() + a.slice(1), a + '-schedule');
					b.dataset.path = '/api/schedules/' + encodeURIComponent(s.name) + '/' + a;
					b.dataset.what = a + ' ' + s.name;
					tr.cells[7].appendChild(b);
				});
				return tr;
			},
			function (tr, r) {
				if (r.h !== undefined) {
					setAttr(tr, 'data-history', r.h);
					return;
				}
				var s = r.s, c = tr.cells;
				setAttr(tr, 'data-schedule', s.name);
				setAttr(tr, 'data-paused', !!s.paused);
				setAttr(tr, 'data-next', s.next || '');
				setText(c[1], s.expr + (s.tz && s.tz !== 'UTC' ? ' (' + s.tz + ')' : ''));
				setText(c[2], s.handler);
				var when = s.next_s ? s.next_s * 1000 - Date.now() : null;
				setText(c[3], s.next ? s.next + (when !== null ? ' (in ' + duration(Math.max(0, when)) + ')' : '') : 'none');
				setText(c[4], s.last || '');
				setText(c[5], num(s.runs));
				var st = s.paused ? 'paused' + (s.note ? ': ' + s.note : '') : (s.state || 'active');
				setText(c[6], st);
				setClass(c[6], 'state state-' + (s.paused ? 'paused' : (s.state || 'active')));
				var bs = c[7].children;
				bs[0].hidden = !!s.paused;
				bs[1].hidden = !s.paused;
			});
		/* the runs of the schedules whose history is open */
		return Promise.all(Object.keys(openHistory).filter(function (n) {
			return openHistory[n];
		}).map(function (name) {
			return api('/api/schedules/' + encodeURIComponent(name)).then(function (d) {
				renderHistory(name, (d && d.history) || []);
			}, function (err) {
				renderHistory(name, null, err.message);
			});
		}));
	}

	function renderHistory(name, runs, error) {
		var tr = document.querySelector('tr.history[data-history="' + CSS.escape(name) + '"]');
		if (!tr) return;
		var ol = tr.querySelector('ol');
		var items = error ? [{ k: 'e', text: 'history: ' + error }] : runs.map(function (h, i) {
			/* a run of `clusterctl --json cron history`: when it was due, when it
			 * fired, what came of it, where, and why (a skip, a failure) */
			var parts = [h.scheduled || '', h.outcome || ''];
			if (h.fired_ms) parts.push('fired ' + clock(h.fired_ms));
			if (h.task_id) parts.push('task ' + h.task_id);
			if (h.node) parts.push('on ' + h.node);
			if (h.why) parts.push(h.why);
			return { k: i, text: parts.filter(Boolean).join(', ') };
		});
		if (!items.length) items = [{ k: 'none', text: 'no runs yet' }];
		while (ol.children.length > items.length) ol.removeChild(ol.lastChild);
		items.forEach(function (it, i) {
			var li = ol.children[i] || ol.appendChild(document.createElement('li'));
			setText(li, it.text);
		});
	}

	/* ---- cache ---- */

	var PALETTE = ['#4e79a7', '#f28e2b', '#59a14f', '#e15759', '#76b7b2', '#edc948',
		'#b07aa1', '#ff9da7', '#9c755f', '#bab0ac'];
	var lastMap = '';

	function renderCache(body) {
		var caches = Array.isArray(body) ? body : ((body && (body.caches || body.stats)) || []);
		var parts = body && !Array.isArray(body) ? body.partitions : null;
		syncRows($('caches').tBodies[0], caches, function (c) { return c.cache + '@' + c.node; },
			function () { return row(10); },
			function (tr, s) {
				var c = tr.cells;
				setAttr(tr, 'data-cache', s.cache);
				setText(c[0], s.cache);
				setText(c[1], s.node);
				setText(c[2], num(s.entries));
				setText(c[3], bytes(s.memory_bytes));
				setText(c[4], num(s.hits));
				setText(c[5], num(s.misses));
				setText(c[6], num(s.evictions));
				setText(c[7], num(s.partitions_primary) + ' / ' + num(s.partitions_replica));
				setText(c[8], num(s.partitions_moving));
				setText(c[9], num(s.hints_pending));
			});
		if (!parts) {
			setText($('partition-summary'), '');
			return;
		}
		setText($('partition-summary'), num(parts.partitions) + ' partitions, ' + num(parts.replicas) +
			' replicas each; this node owns ' + num(parts.owned) + ', ' + num(parts.moving) + ' moving');
		var map = parts.map || [];
		var sig = JSON.stringify(map);
		if (sig === lastMap) return;   /* unchanged: leave the grid alone */
		lastMap = sig;
		var names = {};
		map.forEach(function (owners) { (owners || []).forEach(function (n) { names[n] = true; }); });
		var sorted = Object.keys(names).sort();
		var colour = {};
		sorted.forEach(function (n, i) { colour[n] = PALETTE[i % PALETTE.length]; });
		var legend = $('partition-legend');
		legend.textContent = '';
		sorted.forEach(function (n) {
			var item = el('span', 'legend-item', n);
			var sw = el('span', 'swatch');
			sw.style.background = colour[n];
			item.insertBefore(sw, item.firstChild);
			legend.appendChild(item);
		});
		var grid = $('partition-map');
		var frag = document.createDocumentFragment();
		map.forEach(function (owners, p) {
			owners = owners || [];
			var cell = el('span', 'pcell');
			cell.style.background = owners.length ? colour[owners[0]] : '#ddd';
			cell.title = 'partition ' + p + ': ' + (owners.length ? owners.join(', ') : 'no owner');
			cell.dataset.partition = p;
			cell.dataset.owner = owners[0] || '';
			frag.appendChild(cell);
		});
		grid.textContent = '';
		grid.appendChild(frag);
	}

	/* ---- auth ---- */

	function checkAuth() {
		return api('/api/auth').then(function (a) {
			var was = canWrite;
			canWrite = !!(a && a.write);
			authChecked = true;
			var st = $('auth-state');
			setAttr(st, 'data-write', canWrite);
			setText(st, canWrite ? 'token accepted: actions enabled' :
				(token ? 'token not accepted: read only' : 'read only (no token)'));
			setClass(st, canWrite ? 'good' : (token ? 'bad' : ''));
			if (was !== canWrite) refreshButtons();
		}, function (err) {
			if (!err.unreachable) setText($('auth-state'), 'auth: ' + err.message);
		});
	}

	$('token').value = token;
	$('auth-form').addEventListener('submit', function (ev) {
		ev.preventDefault();
		token = $('token').value.trim();
		if (token) sessionStorage.setItem(TOKEN_KEY, token);
		else sessionStorage.removeItem(TOKEN_KEY);
		checkAuth();
	});
	$('token-clear').addEventListener('click', function () {
		token = '';
		$('token').value = '';
		sessionStorage.removeItem(TOKEN_KEY);
		checkAuth();
	});

	/* ---- the poll loop ---- */

	function banner(err) {
		var b = $('banner');
		if (err) {
			setText(b, 'Node unreachable: ' + err.message + '. Retrying every ' + POLL_MS / 1000 + ' s.');
			b.hidden = false;
			document.body.classList.add('unreachable');
		} else if (!b.hidden) {
			b.hidden = true;
			document.body.classList.remove('unreachable');
		}
	}

	function poll() {
		pollTimer = null;
		if (document.hidden) return;   /* resumed by visibilitychange */
		if (polling) return;
		polling = true;
		var slow = polls % SLOW_EVERY === 0;
		polls++;
		var jobs = [
			section('status', '/api/status', renderStatus),
			section('members', '/api/members', renderMembers),
			section('tasks', '/api/tasks?limit=50', renderTasks),
			section('fanouts', '/api/fanouts?limit=20', renderFanouts)
		];
		if (slow || !authChecked) jobs.push(checkAuth());
		if (slow) {
			jobs.push(section('schedules', '/api/schedules', renderSchedules));
			jobs.push(section('cache', '/api/cache', renderCache));
		}
		Promise.all(jobs).then(function (errs) {
			var down = errs.filter(function (e) { return e && e.unreachable; })[0];
			banner(down || null);
			if (!down) setText($('updated'), clock(Date.now()));
		}).then(function () {
			polling = false;
			schedule(POLL_MS);
		});
	}

	function schedule(ms) {
		if (pollTimer) clearTimeout(pollTimer);
		pollTimer = setTimeout(poll, ms);
	}

	/* soon, and with the slow sections too (after an action, a click) */
	function pollNow() {
		polls = 0;
		schedule(50);
	}

	document.addEventListener('visibilitychange', function () {
		if (!document.hidden) {
			pollNow();
			if (!eventsRunning) events();
		}
	});

	/* ---- events: long-polling /api/events (EventSource cannot send the
	 * Authorization header, which --http-auth all needs) ---- */

	var evAfter = 0;
	var evNode = null;
	var eventsRunning = false;

	function events() {
		if (document.hidden) {
			eventsRunning = false;
			return;
		}
		eventsRunning = true;
		var wait = evNode === null ? 0 : EVENTS_WAIT_MS;
		api('/api/events?after=' + evAfter + '&wait_ms=' + wait + '&max=200').then(function (page) {
			setText($('events-state'), 'live');
			var id = page.node_id + '/' + page.started_ms;
			if (evNode !== null && id !== evNode) {
				/* the node restarted: its sequence starts again at 1 */
				evAfter = 0;
				evNode = id;
				addEventLine({ seq: 0, wall_ms: Date.now(), kind: 'dashboard', subject: page.node,
					message: 'the node restarted; its events start again' });
				setTimeout(events, 0);
				return;
			}
			evNode = id;
			(page.events || []).forEach(function (e) {
				if (e.seq > evAfter) {
					addEventLine(e);
					evAfter = e.seq;
				}
			});
			if (evAfter < (page.last_seq || 0) && !(page.events || []).length) evAfter = page.last_seq;
			setTimeout(events, 0);
		}, function (err) {
			setText($('events-state'), 'disconnected: ' + err.message);
			setTimeout(events, POLL_MS);
		});
	}

	function addEventLine(e) {
		var ol = $('events');
		var li = el('li', 'event kind-' + String(e.kind).replace(/[^a-z0-9_-]/gi, ''));
		li.dataset.seq = e.seq;
		li.dataset.kind = e.kind;
		li.dataset.subject = e.subject || '';
		li.appendChild(el('time', null, clock(e.wall_ms)));
		li.appendChild(el('span', 'ekind', e.kind));
		li.appendChild(el('span', 'esubject', e.subject));
		li.appendChild(el('span', 'emessage', e.message));
		ol.insertBefore(li, ol.firstChild);
		while (ol.children.length > EVENTS_KEEP) ol.removeChild(ol.lastChild);
	}

	poll();
	events();
})();
