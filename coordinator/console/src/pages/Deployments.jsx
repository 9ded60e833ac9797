import { useState } from 'preact/hooks';
import { api, qs, fmtTime, session } from '../api.js';
import { Badge, ErrorBox, Pager, useCursor, useLoad } from '../ui.jsx';

export function Progress({ d }) {
  const c = d.target_counts || {};
  const total = d.total_targets || 1;
  const seg = (n, cls) => (n ? <span class={`seg ${cls}`} style={{ width: `${(100 * n) / total}%` }} title={`${cls}: ${n}`} /> : null);
  return (
    <div class="progress" title={`${d.completed_targets}/${d.total_targets} succeeded`}>
      {seg(c.success, 'success')}
      {seg(c.deploying, 'deploying')}
      {seg(c.failed + c.quarantined, 'failed')}
      {seg(c.rolled_back, 'rolled_back')}
      {seg(c.offline, 'offline')}
      {seg(c.skipped, 'skipped')}
    </div>
  );
}

export function Deployments() {
  const [status, setStatus] = useState('');
  const paging = useCursor();
  const { data, error } = useLoad(() => api(`/deployments${qs({ status, cursor: paging.cursor, limit: 50 })}`), [status, paging.cursor]);
  const list = data?.deployments || [];
  return (
    <section>
      <div class="row">
        <h2>Deployments</h2>
        {session.canWrite() ? (
          <a class="button primary" href="#/deployments/new" id="new-deployment">
            New deployment
          </a>
        ) : null}
      </div>
      <div class="filters">
        <select
          value={status}
          onChange={(e) => {
            paging.reset();
            setStatus(e.target.value);
          }}
        >
          <option value="">any status</option>
          {['pending', 'running', 'paused', 'completed', 'failed', 'rolled_back'].map((s) => (
            <option value={s}>{s}</option>
          ))}
        </select>
      </div>
      <ErrorBox error={error} />
      <table class="grid" id="deployments">
        <thead>
          <tr>
            <th>Deployment</th>
            <th>Flow version</th>
            <th>Strategy</th>
            <th>Status</th>
            <th>Targets</th>
            <th>Progress</th>
            <th>Created</th>
          </tr>
        </thead>
        <tbody>
          {list.map((d) => (
            <tr data-deployment={d.id}>
              <td class="mono">
                <a href={`#/deployments/${d.id}`}>{d.id}</a>
              </td>
              <td>
                {d.artifact.name} {d.artifact.version}
              </td>
              <td>{d.strategy}</td>
              <td>
                <Badge value={d.status} />
              </td>
              <td>
                {d.completed_targets}/{d.total_targets}
              </td>
              <td>
                <Progress d={d} />
              </td>
              <td>{fmtTime(d.created_at)}</td>
            </tr>
          ))}
          {data && list.length === 0 ? (
            <tr>
              <td colspan="7" class="muted">
                No deployments.
              </td>
            </tr>
          ) : null}
        </tbody>
      </table>
      <Pager paging={paging} next={data?.next} count={list.length} />
    </section>
  );
}
