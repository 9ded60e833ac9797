import { useState } from 'preact/hooks';
import { api, qs, fmtTime } from '../api.js';
import { Badge, ErrorBox, Pager, useCursor, useLoad } from '../ui.jsx';

// The audit log, newest first, paged by the API's cursor; searchable by deployment and device
// (the API's filters), and the shown page by any text.
export function Audit() {
  const [form, setForm] = useState({ deployment_id: '', device_id: '', text: '' });
  const [filter, setFilter] = useState(form);
  const paging = useCursor();
  const { data, error } = useLoad(
    () => api(`/audit${qs({ deployment_id: filter.deployment_id, device_id: filter.device_id, cursor: paging.cursor, limit: 100 })}`),
    [filter.deployment_id, filter.device_id, paging.cursor],
  );
  const set = (k) => (e) => setForm({ ...form, [k]: e.target.value });
  const text = form.text.trim().toLowerCase();
  const entries = (data?.entries || []).filter(
    (a) => !text || [a.actor, a.action, a.outcome, a.detail, a.device_id, a.deployment_id].some((v) => (v || '').toLowerCase().includes(text)),
  );
  return (
    <section>
      <h2>Audit log</h2>
      <form
        class="filters"
        onSubmit={(e) => {
          e.preventDefault();
          paging.reset();
          setFilter({ ...form });
        }}
      >
        <input placeholder="Deployment id" value={form.deployment_id} onInput={set('deployment_id')} />
        <input placeholder="Device id" value={form.device_id} onInput={set('device_id')} />
        <button type="submit" class="primary">
          Search
        </button>
        <input placeholder="Find on this page…" value={form.text} onInput={set('text')} />
      </form>
      <ErrorBox error={error} />
      <table class="grid" id="audit">
        <thead>
          <tr>
            <th>At</th>
            <th>Actor</th>
            <th>Action</th>
            <th>Outcome</th>
            <th>Deployment</th>
            <th>Device</th>
            <th>Detail</th>
          </tr>
        </thead>
        <tbody>
          {entries.map((a) => (
            <tr>
              <td>{fmtTime(a.at)}</td>
              <td>{a.actor}</td>
              <td>{a.action}</td>
              <td>
                <Badge value={a.outcome} />
              </td>
              <td class="mono">{a.deployment_id ? <a href={`#/deployments/${a.deployment_id}`}>{a.deployment_id}</a> : '—'}</td>
              <td class="mono">{a.device_id || '—'}</td>
              <td class="detail">{a.detail}</td>
            </tr>
          ))}
        </tbody>
      </table>
      <Pager paging={paging} next={data?.next} count={entries.length} />
    </section>
  );
}
