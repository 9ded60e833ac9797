import { useEffect, useRef, useState } from 'preact/hooks';
import { api, live, qs, fmtTime, session } from '../api.js';
import { Badge, ErrorBox, Pager, useCursor, useLoad } from '../ui.jsx';
import { Progress } from './Deployments.jsx';
import { Incident, Verification, hasIncident } from './Incident.jsx';

// Which commands make sense in which status (the server decides; a refused one shows its 409).
const COMMANDS = [
  ['start', (d) => d.status === 'pending'],
  ['pause', (d) => d.status === 'running'],
  ['resume', (d) => d.status === 'paused' && !d.awaiting_approval],
  ['approve', (d) => d.awaiting_approval],
  ['rollback', (d) => ['running', 'paused', 'completed', 'failed'].includes(d.status)],
  ['abort', (d) => ['pending', 'running', 'paused'].includes(d.status)],
];

// Gate figures: a few significant digits (the engine's limits are computed floats).
const num = (v) => (Number.isInteger(v) ? String(v) : Number(v.toPrecision(3)).toString());

function Counts({ c }) {
  return (
    <span class="counts">
      {Object.entries(c)
        .filter(([, n]) => n)
        .map(([k, n]) => (
          <span class={`count b-${k}`}>
            {k} {n}
          </span>
        ))}
    </span>
  );
}

function Targets({ id, version }) {
  const paging = useCursor();
  const { data, error } = useLoad(() => api(`/deployments/${id}/targets${qs({ cursor: paging.cursor, limit: 50 })}`), [id, paging.cursor, version]);
  return (
    <div>
      <h4>Devices {data ? <span class="muted">({data.total})</span> : null}</h4>
      <ErrorBox error={error} />
      <table class="grid small" id="targets">
        <thead>
          <tr>
            <th>Device</th>
            <th>Stage</th>
            <th>Status</th>
            <th>Generation</th>
            <th>Detail</th>
          </tr>
        </thead>
        <tbody>
          {(data?.targets || []).map((t) => (
            <tr data-target={t.device_id}>
              <td class="mono">{t.device_id}</td>
              <td>{t.stage}</td>
              <td>
                <Badge value={t.status} />
              </td>
              <td>{t.generation}</td>
              <td class="detail">{t.detail}</td>
            </tr>
          ))}
        </tbody>
      </table>
      <Pager paging={paging} next={data?.next} />
    </div>
  );
}

function Report({ id, version }) {
  const { data, error } = useLoad(() => api(`/deployments/${id}/report?format=markdown`, { raw: true }), [id, version]);
  return (
    <div>
      <ErrorBox error={error} />
      <pre class="report" id="report">
        {data || 'Loading…'}
      </pre>
    </div>
  );
}

export function DeploymentView({ id, tab }) {
  const [version, setVersion] = useState(0);
  const [mode, setMode] = useState('connecting');
  const [cmdError, setCmdError] = useState(null);
  const [busy, setBusy] = useState(null);
  const { data: d, error, reload } = useLoad(() => api(`/deployments/${id}`), [id]);
  const pending = useRef(null);
  // Live: each event about this deployment (or each poll tick) re-reads it, at most ~4 times
  // a second; the targets page and the report follow through `version`.
  useEffect(() => {
    const sub = live({ deployment: id }, (ev) => {
      if (ev && ev.deployment_id && ev.deployment_id !== id) return;
      if (pending.current) return;
      pending.current = setTimeout(() => {
        pending.current = null;
        reload();
        setVersion((v) => v + 1);
      }, 250);
    });
    const m = setInterval(() => setMode(sub.mode()), 500);
    return () => {
      sub.stop();
      clearInterval(m);
      clearTimeout(pending.current);
      pending.current = null;
    };
  }, [id, reload]);

  const command = async (c) => {
    if (['rollback', 'abort'].includes(c) && !confirm(`${c} deployment ${id}?`)) return;
    setBusy(c);
    setCmdError(null);
    try {
      await api(`/deployments/${id}/${c}`, { method: 'POST' });
      await reload();
      setVersion((v) => v + 1);
    } catch (e) {
      setCmdError(e);
    } finally {
      setBusy(null);
    }
  };
  if (!d) return <section>{error ? <ErrorBox error={error} /> : <p class="muted">Loading…</p>}</section>;
  return (
    <section id="deployment" data-status={d.status}>
      <div class="row">
        <h2>
          Deployment <span class="mono">{d.id}</span> <Badge value={d.status} />
        </h2>
        <span class={`live live-${mode}`} title="how this page follows the deployment">
          {mode === 'events' ? '● live (events)' : mode === 'polling' ? '● live (polling)' : '○ connecting'}
        </span>
      </div>
      <p>
        {d.artifact.name} {d.artifact.version} · {d.strategy} · phase <b>{d.phase}</b>
        {d.status_reason ? <> · {d.status_reason}</> : null}
        {d.pause_reason ? <> · paused: {d.pause_reason}</> : null}
        {d.awaiting_approval ? <b class="warn"> · awaiting approval</b> : null}
      </p>
      <div class="actions" id="commands" hidden={!session.canWrite()}>
        {COMMANDS.map(([c, ok]) => (
          <button class={c === 'rollback' || c === 'abort' ? 'danger' : c === 'start' || c === 'approve' ? 'primary' : ''} disabled={!ok(d) || !!busy} onClick={() => command(c)} data-command={c}>
            {busy === c ? `${c}…` : c}
          </button>
        ))}
      </div>
      <ErrorBox error={cmdError || error} />
      <div class="summary">
        <Progress d={d} />
        <span>
          {d.completed_targets}/{d.total_targets} succeeded · created {fmtTime(d.created_at)}
          {d.started_at ? ` · started ${fmtTime(d.started_at)}` : ''}
          {d.completed_at ? ` · finished ${fmtTime(d.completed_at)}` : ''}
        </span>
      </div>
      <Verification v={d.rollback_verification} />
      <nav class="tabs">
        <a href={`#/deployments/${id}`} class={tab !== 'report' && tab !== 'incident' ? 'active' : ''}>
          Stages
        </a>
        <a href={`#/deployments/${id}/report`} class={tab === 'report' ? 'active' : ''} id="report-tab">
          Report
        </a>
        {hasIncident(d) ? (
          <a href={`#/deployments/${id}/incident`} class={tab === 'incident' ? 'active' : ''} id="incident-tab">
            Incident
          </a>
        ) : null}
      </nav>
      {tab === 'report' ? (
        <Report id={id} version={version} />
      ) : tab === 'incident' && hasIncident(d) ? (
        <Incident id={id} version={version} />
      ) : (
        <>
          <div class="stages" id="stages">
            {d.stages.map((s) => {
              const gates = d.gates.filter((g) => g.stage === s.index);
              const state = s.index < d.current_stage || d.status === 'completed' ? 'done' : s.index === d.current_stage ? 'current' : 'later';
              return (
                <div class={`stage ${state}`} data-stage={s.name}>
                  <div class="stage-head">
                    <b>{s.name}</b> <span class="muted">{s.kind}</span> <span class="muted">
                      · {s.size} device{s.size === 1 ? '' : 's'}
                    </span>
                  </div>
                  <Counts c={s.counts} />
                  {s.devices.length ? (
                    <div class="small muted mono ids">
                      {s.devices.slice(0, 8).join(', ')}
                      {s.devices.length > 8 ? ` … +${s.devices.length - 8}` : ''}
                    </div>
                  ) : null}
                  {gates.map((g) => (
                    <div class="gate">
                      <div>
                        gate <b>{g.gate}</b> <Badge value={g.verdict} /> <span class="muted small">{fmtTime(g.at)}</span>
                      </div>
                      {g.reason ? <div class="small">{g.reason}</div> : null}
                      <table class="grid small">
                        {g.checks.map((c) => (
                          <tr class={c.pass ? '' : 'fail'}>
                            <td>{c.name}</td>
                            <td title={`${c.value} / ${c.limit}`}>
                              {num(c.value)} / {num(c.limit)}
                            </td>
                            <td>{c.pass ? '✓' : '✗'}</td>
                          </tr>
                        ))}
                      </table>
                    </div>
                  ))}
                </div>
              );
            })}
          </div>
          <Targets id={id} version={version} />
        </>
      )}
    </section>
  );
}
