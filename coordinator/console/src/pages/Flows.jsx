import { useState } from 'preact/hooks';
import { api, fmtTime, session } from '../api.js';
import { Badge, ErrorBox, useLoad } from '../ui.jsx';

const W = 150;
const H = 44;

/**
 * Validation problems from a 422: the API names the first problem's place in `field`
 * (`definition.nodes[n2].config.rules`) and lists every problem in the message, one per
 * `; `-separated part, each `node n2: config.rules: missing …` (floe-flow's report).
 * Returns { byNode: {id: [text]}, other: [text] }.
 */
export function problemsOf(err) {
  const byNode = {};
  const other = [];
  if (!err || err.status !== 422) return { byNode, other };
  const msg = err.message || '';
  const field = err.field || '';
  const body = field && msg.startsWith(`${field}: `) ? msg.slice(field.length + 2) : msg;
  // The service joins the report's lines with "; ", which a problem's own text may hold too:
  // split only where the next problem's subject starts.
  for (const part of body.split(/; (?=(?:node \S+|connection \S+|variable \S+|flow): )/)) {
    const m = /^node (\S+): (.*)$/.exec(part);
    if (m) (byNode[m[1]] ||= []).push(m[2]);
    else if (part.trim()) other.push(part);
  }
  const f = /^definition\.nodes\[([^\]]+)\]/.exec(field);
  if (f && !byNode[f[1]]) byNode[f[1]] = [body];
  return { byNode, other };
}

function Graph({ def, problems, selected, onSelect }) {
  const nodes = Array.isArray(def?.nodes) ? def.nodes : [];
  const conns = Array.isArray(def?.connections) ? def.connections : [];
  const pos = {};
  nodes.forEach((n, i) => {
    const x = Number.isFinite(n.x) ? n.x : 40 + (i % 5) * 200;
    const y = Number.isFinite(n.y) ? n.y : 60 + Math.floor(i / 5) * 120;
    pos[n.id] = { x, y };
  });
  const xs = Object.values(pos).map((p) => p.x);
  const ys = Object.values(pos).map((p) => p.y);
  const minX = Math.min(0, ...xs) - 20;
  const minY = Math.min(0, ...ys) - 40;
  const maxX = Math.max(400, ...xs) + W + 20;
  const maxY = Math.max(200, ...ys) + H + 30;
  return (
    <svg class="graph" id="flow-graph" viewBox={`${minX} ${minY} ${maxX - minX} ${maxY - minY}`} role="img" aria-label="flow graph">
      <defs>
        <marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" orient="auto">
          <path d="M0,0 L10,5 L0,10 z" fill="#6b7785" />
        </marker>
      </defs>
      {conns.map((c) => {
        const a = pos[c.source];
        const b = pos[c.target];
        if (!a || !b) return null;
        const x1 = a.x + W;
        const y1 = a.y + H / 2 + (c.output || 0) * 8;
        const x2 = b.x;
        const y2 = b.y + H / 2 + (c.input || 0) * 8;
        const dx = Math.max(40, Math.abs(x2 - x1) / 2);
        return <path class="wire" d={`M${x1},${y1} C${x1 + dx},${y1} ${x2 - dx},${y2} ${x2},${y2}`} marker-end="url(#arrow)" />;
      })}
      {nodes.map((n) => {
        const p = pos[n.id];
        const bad = problems.byNode[n.id];
        return (
          <g
            class={`node${selected === n.id ? ' selected' : ''}${bad ? ' invalid' : ''}`}
            data-node={n.id}
            transform={`translate(${p.x},${p.y})`}
            onClick={() => onSelect(n.id)}
          >
            <rect width={W} height={H} rx="6" />
            <text x="10" y="18" class="ntitle">
              {(n.name || n.id).slice(0, 20)}
            </text>
            <text x="10" y="35" class="ntype">
              {n.type} · {n.id}
            </text>
            {bad ? (
              <g class="problem-mark">
                <circle cx={W - 4} cy="4" r="9" />
                <text x={W - 4} y="8" text-anchor="middle">
                  {bad.length}
                </text>
                <title>{bad.join('\n')}</title>
              </g>
            ) : null}
          </g>
        );
      })}
    </svg>
  );
}

function FlowDetail({ flow, onChanged }) {
  const [selected, setSelected] = useState(null);
  const [error, setError] = useState(null);
  const [busy, setBusy] = useState(false);
  const problems = problemsOf(error);
  const def = flow.definition || {};
  const node = (def.nodes || []).find((n) => n.id === selected);
  const act = async (path, label) => {
    setBusy(label);
    setError(null);
    try {
      const f = await api(`/flows/${flow.id}/${path}`, { method: 'POST' });
      onChanged(f.id);
    } catch (e) {
      setError(e);
    } finally {
      setBusy(false);
    }
  };
  return (
    <div class="flow-detail">
      <div class="flow-head">
        <div>
          <h3>
            {flow.name} <span class="muted">v{flow.version}</span> <Badge value={flow.state} />
          </h3>
          <div class="muted small">
            {flow.id} · updated {fmtTime(flow.updated_at)}
            {flow.artifact ? ` · artifact ${flow.artifact.name} ${flow.artifact.version} (release ${flow.artifact.release})` : ''}
          </div>
          {flow.description ? <p>{flow.description}</p> : null}
        </div>
        <div class="actions" hidden={!session.canWrite()}>
          <button class="primary" disabled={flow.state !== 'draft' || busy} onClick={() => act('publish', 'publish')}>
            {busy === 'publish' ? 'Publishing…' : 'Publish'}
          </button>
          <button disabled={flow.state === 'draft' || busy} onClick={() => act('versions', 'version')}>
            New version
          </button>
          <button disabled={flow.state !== 'published' || busy} onClick={() => act('archive', 'archive')}>
            Archive
          </button>
        </div>
      </div>
      {error && error.status === 422 ? (
        <div class="error" role="alert" id="flow-problems">
          <b>The flow does not validate.</b>
          <ul>
            {Object.entries(problems.byNode).map(([id, list]) =>
              list.map((p) => (
                <li>
                  <a onClick={() => setSelected(id)}>node {id}</a>: {p}
                </li>
              )),
            )}
            {problems.other.map((p) => (
              <li>{p}</li>
            ))}
          </ul>
        </div>
      ) : (
        <ErrorBox error={error} />
      )}
      <div class="flow-body">
        <Graph def={def} problems={problems} selected={selected} onSelect={setSelected} />
        <aside class="panel" id="node-panel">
          {node ? (
            <>
              <h4>{node.name || node.id}</h4>
              <dl>
                <dt>id</dt>
                <dd class="mono">{node.id}</dd>
                <dt>type</dt>
                <dd>{node.type}</dd>
                <dt>position</dt>
                <dd>
                  {node.x}, {node.y}
                </dd>
              </dl>
              {problems.byNode[node.id] ? (
                <div class="error">
                  {problems.byNode[node.id].map((p) => (
                    <div>{p}</div>
                  ))}
                </div>
              ) : null}
              <h5>config</h5>
              <pre>{JSON.stringify(node.config ?? {}, null, 2)}</pre>
            </>
          ) : (
            <>
              <p class="muted">Select a node to see its configuration.</p>
              {Array.isArray(def.variables) && def.variables.length ? (
                <>
                  <h5>variables</h5>
                  <table class="grid small">
                    {def.variables.map((v) => (
                      <tr>
                        <td class="mono">{v.name}</td>
                        <td>{v.type}</td>
                        <td class="mono">{String(v.value ?? '')}</td>
                      </tr>
                    ))}
                  </table>
                </>
              ) : null}
            </>
          )}
        </aside>
      </div>
    </div>
  );
}

export function Flows({ id }) {
  const [state, setState] = useState('');
  const { data, error, reload } = useLoad(() => api(`/flows${state ? `?state=${state}` : ''}`), [state]);
  const flows = data?.flows || [];
  const current = flows.find((f) => f.id === id);
  return (
    <section class="flows">
      <h2>Flows</h2>
      <ErrorBox error={error} />
      <div class="split">
        <div class="list">
          <select value={state} onChange={(e) => setState(e.target.value)}>
            <option value="">all states</option>
            <option value="draft">draft</option>
            <option value="published">published</option>
            <option value="archived">archived</option>
          </select>
          <ul class="flow-list" id="flows">
            {flows.map((f) => (
              <li class={f.id === id ? 'active' : ''}>
                <a href={`#/flows/${f.id}`} data-flow={f.id}>
                  <b>{f.name}</b> <span class="muted">v{f.version}</span>
                  <br />
                  <Badge value={f.state} /> <span class="muted small">{(f.definition?.nodes || []).length} nodes</span>
                </a>
              </li>
            ))}
            {data && flows.length === 0 ? <li class="muted">No flows.</li> : null}
          </ul>
        </div>
        <div class="detail">
          {current ? (
            <FlowDetail
              key={current.id + current.updated_at}
              flow={current}
              onChanged={(newId) => {
                reload();
                if (newId !== id) location.hash = `#/flows/${newId}`;
              }}
            />
          ) : (
            <p class="muted">Pick a flow to see its graph.</p>
          )}
        </div>
      </div>
    </section>
  );
}
