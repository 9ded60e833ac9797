import { api } from '../api.js';
import { Badge, ErrorBox, useLoad } from '../ui.jsx';

// Whether a deployment has an incident report (the server keeps one for these only).
export const hasIncident = (d) => d.status === 'failed' || d.status === 'rolled_back';

// The rollback verification of a deployment (null when no device was rolled back).
export function Verification({ v }) {
  if (!v) return null;
  return (
    <p id="verification" data-result={v.result}>
      rollback verification ({v.scope}): <Badge value={v.result} /> · healthy {v.healthy} · unhealthy {v.unhealthy} · unverified (offline) {v.unverified_offline}
      {v.pending ? ` · pending ${v.pending}` : ''}
      {v.fleet_within_baseline === true ? ' · fleet back within baseline' : v.fleet_within_baseline === false ? ' · fleet NOT back within baseline' : ''}
    </p>
  );
}

// The incident report, as the server renders it in markdown.
export function Incident({ id, version }) {
  const { data, error } = useLoad(() => api(`/deployments/${id}/incident?format=markdown`, { raw: true }), [id, version]);
  return (
    <div>
      <ErrorBox error={error} />
      <pre class="report" id="incident">
        {data || (error ? '' : 'Loading…')}
      </pre>
    </div>
  );
}
